"""How the `dyn` model of this folder was made: an ONNX export with its input/output height and width made symbolic,
nothing else changed (the decoder's Resize nodes scale by 2, so the graph runs at any multiple of 32; at the export's
own side its output is bit-identical to the input file's).

    python relabel.py facenormals/weights/fast-prior.int8.onnx /tmp/fast-prior-dyn.int8.onnx
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort


def relabel(source: str, target: str) -> None:
    model = onnx.load(source)
    for tensor in (model.graph.input[0], model.graph.output[0]):
        dims = tensor.type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    del model.graph.value_info[:]  # inferred shapes of the fixed side; ONNX Runtime infers them again
    onnx.save(model, target)


def same_at_export_side(source: str, target: str) -> bool:
    sessions = [ort.InferenceSession(path, providers=["CPUExecutionProvider"]) for path in (source, target)]
    dims = [d.dim_value for d in onnx.load(source, load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(0).random((1, *dims[1:]), dtype=np.float32)
    a, b = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in sessions)
    return bool(np.array_equal(a, b))


if __name__ == "__main__":
    relabel(sys.argv[1], sys.argv[2])
    print("bit-identical at the export side:", same_at_export_side(sys.argv[1], sys.argv[2]))
