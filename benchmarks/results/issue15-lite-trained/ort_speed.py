"""Batch-1 latency of ONNX files on ONNX Runtime's CPU provider, 2 threads, interleaved runs (medians, ms).

    python ort_speed.py NAME=MODEL.onnx [NAME=MODEL.onnx ...] [--runs 40]
"""
import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="+", help="NAME=MODEL.onnx")
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = {}
    for spec in args.models:
        name, path = spec.split("=", 1)
        sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = np.random.rand(1, 7, 256, 256).astype(np.float32)
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():
        for _ in range(5):
            session.run(None, {session.get_inputs()[0].name: x})
    for _ in range(args.runs):  # interleaved, so load changes hit every model alike
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: x})
            times[name].append((time.perf_counter() - start) * 1e3)
    print(json.dumps({name: round(float(np.median(t)), 1) for name, t in times.items()}))


if __name__ == "__main__":
    main()
