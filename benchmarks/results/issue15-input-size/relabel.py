"""Shipped INT8 twin with its spatial input/output dims made symbolic (no other change) → runs at 192?"""
import onnx, numpy as np, onnxruntime as ort
m = onnx.load("/work/wt_lat11/facenormals/weights/fast-prior.int8.onnx")
for t in (m.graph.input[0], m.graph.output[0]):
    d = t.type.tensor_type.shape.dim
    d[2].dim_param, d[3].dim_param = "height", "width"
del m.graph.value_info[:]
onnx.save(m, "/work/scratch/lat11/fast-prior-dyn.int8.onnx")
o = ort.SessionOptions(); o.intra_op_num_threads = 1
a = ort.InferenceSession("/work/scratch/lat11/fast-prior-dyn.int8.onnx", o, providers=["CPUExecutionProvider"])
b = ort.InferenceSession("/work/scratch/lat11/fast-prior-192.int8.onnx", o, providers=["CPUExecutionProvider"])
s = ort.InferenceSession("/work/wt_lat11/facenormals/weights/fast-prior.int8.onnx", o, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 7, 256, 256), dtype=np.float32)
print("256 dyn vs shipped identical:", np.array_equal(a.run(None, {"image": x})[0], s.run(None, {"image": x})[0]))
x = np.random.default_rng(0).random((1, 7, 192, 192), dtype=np.float32)
ya, yb = a.run(None, {"image": x})[0], b.run(None, {"image": x})[0]
ang = np.degrees(np.arccos(np.clip((ya * yb).sum(1), -1, 1)))
print("192 dyn(256-calibrated) vs 192-calibrated: mean", ang.mean(), "p99", np.percentile(ang, 99))
