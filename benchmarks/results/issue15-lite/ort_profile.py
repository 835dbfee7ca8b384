"""Per-op-type and top-node time (one ORT thread, batch 1) from ORT's profiler."""
import collections
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    path = sys.argv[1]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = "/tmp/lite11_prof"
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random((1, 7, 256, 256), dtype=np.float32)
    n = 20
    for _ in range(n):
        sess.run(None, {inp.name: x})
    prof = sess.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    os.remove(prof)
    by_type, by_node = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_type[e["args"]["op_name"]] += e["dur"] / 1e3 / n
            shape = str(e["args"].get("output_type_shape", ""))[:60]
            by_node[f'{e["name"][:-12]} {e["args"]["op_name"]} {shape}'] += e["dur"] / 1e3 / n
    print(path, f"total {sum(by_type.values()):.1f} ms/run")
    for k, v in by_type.most_common(12):
        print(f"  {k:<28}{v:6.2f}")
    for k, v in by_node.most_common(18):
        print(f"  {v:6.2f}  {k}")


if __name__ == "__main__":
    main()
