"""The FP16-cast ONNX: fp16 weights and activations, fp32 input/output, the output head kept in fp32.

This is the file TensorRT 11's strongly typed networks need for FP16 (they take precisions from the
graph, not from builder flags), and what the CUDA EP runs fastest. The last 1×1 conv and the per-pixel
L2 normalisation stay fp32: the sum of squares and its epsilon underflow in fp16, and the head has three
output channels, so keeping it costs nothing.

The cast is written here rather than with onnxconverter-common: its cast clean-up pass rejects graphs
whose output is produced by a block-listed node (exactly the fp32 head), and this graph needs only
four rules: cast the input once, cast into the fp32 island once, keep Resize's ``roi``/``scales`` fp32,
and make every node that creates a float tensor from an attribute (the prior branch's mask ``Cast``,
``Constant``) create fp16. The result is checked with ``check_model(full_check=True)``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facenormals.export.onnx_export import head_nodes

# Inputs that the ONNX spec requires to stay float32 whatever the data type (Resize roi, scales).
FP32_INPUT_SLOTS = {"Resize": (1, 2)}


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 copy of an fp32 ``ImageToNormal`` graph with fp32 I/O and an fp32 head, checked in full."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    graph = model_copy.graph
    if any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer):
        raise ValueError("model already holds fp16 weights: convert the fp32 export, not this one")
    head = set(head_nodes(model_copy))
    graph_input = graph.input[0].name
    fp32_slots = _fp32_slot_names(graph, head)
    _cast_initializers(graph, head, fp32_slots)
    resize_slots = _fp32_slot_names(graph, set())  # head inputs made by nodes get a Cast below, Resize's cannot
    for node in graph.node:
        if node.name not in head:
            _retype_float_producer(node, resize_slots)

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
    graph.node.extend(_topological(new_nodes, {i.name for i in graph.input} | {t.name for t in graph.initializer}))
    del graph.value_info[:]  # stale fp32 annotations; shape inference rebuilds them
    inferred = onnx.shape_inference.infer_shapes(model_copy, strict_mode=True)
    # Mixed float types (e.g. Mul(float16, float)) pass a plain check but fail in ORT and TensorRT: check in full.
    onnx.checker.check_model(inferred, full_check=True)
    return inferred


def _fp32_slot_names(graph: onnx.GraphProto, head: set[str]) -> set[str]:
    """Tensors read at slots that must stay fp32: every input of a head node, Resize roi/scales (spec: float)."""
    names: set[str] = set()
    for node in graph.node:
        slots = range(len(node.input)) if node.name in head else FP32_INPUT_SLOTS.get(node.op_type, ())
        names.update(node.input[i] for i in slots if i < len(node.input) and node.input[i])
    return names


def _fp16_consumers(graph: onnx.GraphProto, head: set[str], name: str) -> list[tuple[onnx.NodeProto, int]]:
    """(node, slot) pairs outside the head that read ``name`` at a slot that follows the activations' type."""
    found = []
    for node in graph.node:
        if node.name in head:
            continue
        fixed = FP32_INPUT_SLOTS.get(node.op_type, ())
        found.extend((node, i) for i, inp in enumerate(node.input) if inp == name and i not in fixed)
    return found


def _cast_initializers(graph: onnx.GraphProto, head: set[str], fp32_slots: set[str]) -> None:
    """fp16 weights; an fp32 initializer also read by an fp32 slot keeps its fp32 self and gains an fp16 twin."""
    for tensor in list(graph.initializer):
        if tensor.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.to_array(tensor).astype(np.float16)
        if tensor.name not in fp32_slots:
            tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))
            continue
        consumers = _fp16_consumers(graph, head, tensor.name)
        if consumers:
            twin = f"{tensor.name}_fp16"
            graph.initializer.append(numpy_helper.from_array(half, twin))
            for node, slot in consumers:
                node.input[slot] = twin


def _retype_float_producer(node: onnx.NodeProto, resize_slots: set[str]) -> None:
    """Nodes that *make* float tensors from a type attribute (Cast, Constant, ConstantOfShape) make fp16 ones.

    Without this a mask like the prior branch's ``Cast(Greater(...), to=FLOAT)`` meets fp16 activations.
    Outputs read at fp32-only slots (Resize scales) keep fp32.
    """
    if any(out in resize_slots for out in node.output):
        return
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" \
                and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            value = np.asarray(attr.f if attr.name == "value_float" else list(attr.floats), np.float16)
            node.ClearField("attribute")
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
            return


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
