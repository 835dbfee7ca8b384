"""Median / p95 ms of one ONNX Runtime thread, batch 1, for each model given."""
import sys
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    for path in sys.argv[1:]:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random((1, 7, 256, 256), dtype=np.float32)
        for _ in range(5):
            sess.run(None, {inp.name: x})
        times = []
        for _ in range(40):
            t = time.perf_counter()
            sess.run(None, {inp.name: x})
            times.append((time.perf_counter() - t) * 1e3)
        print(f"{path}: median {np.median(times):.1f} ms, p95 {np.percentile(times, 95):.1f} ms, min {min(times):.1f}")


if __name__ == "__main__":
    main()
