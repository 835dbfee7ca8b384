"""The FP16-cast ONNX: fp16 weights and activations, fp32 input/output, the output head kept in fp32.

This is the file TensorRT 11's strongly typed networks need for FP16 (they take precisions from the
graph, not from builder flags), and what the CUDA EP runs fastest. The last 1×1 conv and the per-pixel
L2 normalisation stay fp32: the sum of squares and its epsilon underflow in fp16, and the head has three
output channels, so keeping it costs nothing.

The cast is written here rather than with onnxconverter-common: its cast clean-up pass rejects graphs
whose output is produced by a block-listed node (exactly the fp32 head), and this graph needs only
three rules: cast the input once, cast into the fp32 island once, keep Resize's ``roi``/``scales`` fp32.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facenormals.export.onnx_export import head_nodes

# Inputs that the ONNX spec requires to stay float32 whatever the data type (Resize roi, scales).
FP32_INPUT_SLOTS = {"Resize": (1, 2)}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 copy of an fp32 ``ImageToNormal`` graph with fp32 I/O and an fp32 head."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        raise ValueError("model already holds fp16 weights: convert the fp32 export, not this one")
    head = set(head_nodes(model_copy))
    initializers = {t.name: t for t in graph.initializer}
    graph_input = graph.input[0].name

    keep_fp32: set[str] = set()  # initializers read at fp32-only slots or by head nodes
    for node in graph.node:
        slots = range(len(node.input)) if node.name in head else FP32_INPUT_SLOTS.get(node.op_type, ())
        keep_fp32.update(node.input[i] for i in slots if i < len(node.input))
    for name, tensor in initializers.items():
        if tensor.data_type == TensorProto.FLOAT and name not in keep_fp32:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), name))

    produced_in_fp16 = {out for node in graph.node if node.name not in head for out in node.output}
    new_nodes: list[onnx.NodeProto] = []
    input_fp16 = f"{graph_input}_fp16"
    new_nodes.append(helper.make_node("Cast", [graph_input], [input_fp16], name="cast_input_fp16",
                                      to=TensorProto.FLOAT16))
    to_fp32: dict[str, str] = {}
    for node in graph.node:
        if node.name in head:
            for i, name in enumerate(node.input):
                if name in produced_in_fp16 and name not in to_fp32:
                    to_fp32[name] = f"{name}_fp32"
                    new_nodes.append(helper.make_node("Cast", [name], [to_fp32[name]], name=f"cast_{name}_fp32",
                                                      to=TensorProto.FLOAT))
                if name in to_fp32:
                    node.input[i] = to_fp32[name]
        else:
            for i, name in enumerate(node.input):
                if name == graph_input:
                    node.input[i] = input_fp16
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(_topological(new_nodes, {i.name for i in graph.input} | set(initializers)))
    del graph.value_info[:]  # stale fp32 annotations; shape inference rebuilds them
    return onnx.shape_inference.infer_shapes(model_copy, strict_mode=True)


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    ordered, ready, pending = [], set(available) | {""}, list(nodes)
    while pending:
        progress = [n for n in pending if all(i in ready for i in n.input)]
        if not progress:
            raise ValueError("fp16 cast left a graph with a cycle or a dangling input")
        done = {id(n) for n in progress}
        for node in progress:
            ordered.append(node)
            ready.update(node.output)
        pending = [n for n in pending if id(n) not in done]
    return ordered


def count_fp16_initializers(model: onnx.ModelProto) -> tuple[int, int]:
    """(fp16, fp32) initializer counts: a quick check that the weights really were cast."""
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == TensorProto.FLOAT16)
    fp32 = sum(1 for t in model.graph.initializer if t.data_type == TensorProto.FLOAT)
    return fp16, fp32
