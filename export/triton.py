"""A Triton Inference Server model repository for the image→normal model.

    REPO/
      facenormals/                 platform onnxruntime_onnx (optionally accelerated by the TensorRT EP)
        config.pbtxt
        1/model.onnx
      facenormals_trt/             platform tensorrt_plan (with --engine)
        config.pbtxt
        1/model.plan               + model.plan.json: the engine sidecar (TensorRT version, GPU)

Both configs declare the batch dimension through ``max_batch_size`` (dims exclude it) and enable dynamic
batching, so requests from many camera streams (one face crop each) are merged into GPU batches.
``validate_repository`` re-reads the layout and each config (a small protobuf text-format reader) and
checks it against the model files.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from facenormals.atomic import atomic_path, write_text_atomic

ONNX_PLATFORM = "onnxruntime_onnx"
TRT_PLATFORM = "tensorrt_plan"
MODEL_FILES = {ONNX_PLATFORM: "model.onnx", TRT_PLATFORM: "model.plan"}
QUEUE_DELAY_US = 2000  # wait at most 2 ms to fill a batch: under one camera frame at 60 fps
TRT_CACHE_DIR = "/tmp/facenormals-trt-cache"  # inside the Triton container; mount a volume here to keep engines


def _dims(values: list[int]) -> str:
    return "[ " + ", ".join(str(v) for v in values) + " ]"


def model_config(name: str, platform: str, in_chans: int, size: int, max_batch: int, instances: int,
                 kind: str, input_name: str = "image", output_name: str = "normals", trt_ep: bool = False,
                 trt_cache_dir: str = TRT_CACHE_DIR) -> str:
    """config.pbtxt text for one model."""
    if platform not in MODEL_FILES:
        raise ValueError(f"unknown Triton platform {platform!r}; choose one of {sorted(MODEL_FILES)}")
    if max_batch < 1 or instances < 1:
        raise ValueError(f"max_batch and instances must be at least 1, got {max_batch} and {instances}")
    if kind not in ("gpu", "cpu"):
        raise ValueError(f"instance kind must be 'gpu' or 'cpu', got {kind!r}")
    if platform == TRT_PLATFORM and kind != "gpu":
        raise ValueError("a TensorRT plan runs on GPU instances only")
    preferred = sorted({b for b in (max(1, max_batch // 2), max_batch)})
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {max_batch}",
        "input [",
        f'  {{ name: "{input_name}" data_type: TYPE_FP32 dims: {_dims([in_chans, size, size])} }}',
        "]",
        "output [",
        f'  {{ name: "{output_name}" data_type: TYPE_FP32 dims: {_dims([3, size, size])} }}',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: {_dims(preferred)}",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
        "}",
        f"instance_group [ {{ count: {instances} kind: KIND_{kind.upper()} }} ]",
    ]
    if trt_ep:
        if platform != ONNX_PLATFORM or kind != "gpu":
            raise ValueError("the TensorRT execution provider applies to onnxruntime models on GPU instances")
        lines += ["optimization { execution_accelerators { gpu_execution_accelerator: [ {", '  name: "tensorrt"']
        lines += [f'  parameters {{ key: "{k}" value: "{v}" }}'
                  for k, v in trt_ep_parameters(name, input_name, in_chans, size, max_batch, trt_cache_dir).items()]
        lines += ["} ] } }"]
    return "\n".join(lines) + "\n"


def trt_ep_parameters(name: str, input_name: str, in_chans: int, size: int, max_batch: int,
                      cache_dir: str = TRT_CACHE_DIR) -> dict[str, str]:
    """The TensorRT EP block of an onnxruntime model (keys of Triton's onnxruntime backend).

    One profile covers batch 1..max_batch, so a new batch size while serving does not rebuild the engine; the
    engine and timing caches persist across restarts. ``precision_mode`` stays FP32: the model served is the
    fp16-cast graph (fp32 head), whose types TensorRT follows; FP16 mode would let it cast the head, which
    underflows.
    """
    shape = f"{in_chans}x{size}x{size}"
    return {
        "precision_mode": "FP32",
        "max_workspace_size_bytes": "2147483648",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"{cache_dir}/{name}",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": f"{cache_dir}/timing",
        "trt_profile_min_shapes": f"{input_name}:1x{shape}",
        "trt_profile_opt_shapes": f"{input_name}:{max(1, max_batch // 2)}x{shape}",
        "trt_profile_max_shapes": f"{input_name}:{max_batch}x{shape}",
    }


def write_repository(onnx_path: str | Path, repo: str | Path, name: str = "facenormals",
                     engine: str | Path | None = None, max_batch: int = 8, instances: int = 1,
                     kind: str = "gpu", trt_ep: bool = False) -> list[Path]:
    """Write (or update) the model folders; returns the files written."""
    from facenormals.runtime.engine_header import read_header
    from facenormals.runtime.onnx_info import onnx_model_info

    onnx_path, repo = Path(onnx_path), Path(repo)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"model name {name!r}: use letters, digits, '_', '.', '-' (it is a folder name)")
    in_chans, size, _ = onnx_model_info(onnx_path)
    served = onnx_path
    if trt_ep:
        from facenormals.export.prepare import fp16_onnx

        served = fp16_onnx(onnx_path)  # fp16 body, fp32 I/O and head; fp16/INT8 files as they are
    written = [
        *_write_model(repo / name, served, model_config(name, ONNX_PLATFORM, in_chans, size, max_batch,
                                                        instances, kind, trt_ep=trt_ep)),
    ]
    if engine is not None:
        header = read_header(engine)
        if (header.in_chans, header.size) != (in_chans, size):
            raise ValueError(f"{engine}: engine input {header.in_chans}×{header.size}² differs from "
                             f"{onnx_path} ({in_chans}×{size}²)")
        if header.batch[2] < max_batch:
            raise ValueError(f"{engine}: profile max batch {header.batch[2]} < --max-batch {max_batch}; "
                             "rebuild with a larger --batch MAX or lower --max-batch")
        trt_name = f"{name}_trt"
        config = model_config(trt_name, TRT_PLATFORM, in_chans, size, max_batch, instances, "gpu",
                              header.input_name, header.output_name)
        written += _write_model(repo / trt_name, Path(engine), config)
        sidecar = repo / trt_name / "1" / "model.plan.json"
        shutil.copyfile(Path(str(engine) + ".json"), sidecar)
        written.append(sidecar)
    problems = validate_repository(repo)
    if problems:
        raise ValueError(f"{repo}: the written repository is invalid:\n  " + "\n  ".join(problems))
    return written


def _write_model(folder: Path, model_file: Path, config: str) -> list[Path]:
    platform = parse_pbtxt(config)["platform"][0]
    target = folder / "1" / MODEL_FILES[platform]
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(model_file, tmp)
    write_text_atomic(folder / "config.pbtxt", config)
    return [folder / "config.pbtxt", target]


# ---------------------------------------------------------------------------------------------- validation

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z0-9_.+-]+))')


def _tokens(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"config.pbtxt: cannot read at character {pos}: {text[pos:pos + 20]!r}")
        pos = match.end()
        if match.group(1) is None:
            tokens.append(next(g for g in match.groups()[1:] if g is not None))
    return tokens


def parse_pbtxt(text: str) -> dict[str, list[object]]:
    """Protobuf text format → {field: [values]}; messages become dicts, strings lose their quotes."""
    tokens = _tokens(text)
    message, end = _message(tokens, 0, closing=None)
    if end != len(tokens):
        raise ValueError(f"config.pbtxt: unexpected {tokens[end]!r}")
    return message


def _message(tokens: list[str], i: int, closing: str | None) -> tuple[dict[str, list[object]], int]:
    fields: dict[str, list[object]] = {}
    while i < len(tokens) and tokens[i] != closing:
        key = tokens[i]
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"config.pbtxt: expected a field name, got {key!r}")
        i += 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i >= len(tokens):
            raise ValueError(f"config.pbtxt: field {key!r} has no value")
        values, i = _value(tokens, i)
        fields.setdefault(key, []).extend(values)
    if closing is not None:
        if i >= len(tokens):
            raise ValueError(f"config.pbtxt: missing {closing!r}")
        i += 1
    return fields, i


def _value(tokens: list[str], i: int) -> tuple[list[object], int]:
    token = tokens[i]
    if token == "{":
        message, i = _message(tokens, i + 1, "}")
        return [message], i
    if token == "[":
        values: list[object] = []
        i += 1
        while tokens[i] != "]":
            item, i = _value(tokens, i)
            values.extend(item)
            if tokens[i] == ",":
                i += 1
        return values, i + 1
    if token in "}]:,":
        raise ValueError(f"config.pbtxt: unexpected {token!r}")
    if token.startswith('"'):
        return [token[1:-1]], i + 1
    try:
        return [int(token)], i + 1
    except ValueError:
        return [token], i + 1


def validate_repository(repo: str | Path) -> list[str]:
    """Problems with a model repository's layout and configs (empty when Triton can load it)."""
    import onnx

    repo = Path(repo)
    if not repo.is_dir():
        return [f"{repo}: not a folder"]
    problems: list[str] = []
    models = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not models:
        return [f"{repo}: no model folders"]
    for folder in models:
        config_path = folder / "config.pbtxt"
        if not config_path.is_file():
            problems.append(f"{folder.name}: no config.pbtxt")
            continue
        try:
            config = parse_pbtxt(config_path.read_text())
        except ValueError as err:
            problems.append(f"{folder.name}: {err}")
            continue
        name, platform = config.get("name", [None])[0], config.get("platform", [None])[0]
        if name != folder.name:
            problems.append(f"{folder.name}: config name {name!r} differs from its folder")
        if platform not in MODEL_FILES:
            problems.append(f"{folder.name}: unknown platform {platform!r}")
            continue
        versions = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
        if not versions:
            problems.append(f"{folder.name}: no numeric version folder (e.g. 1/)")
            continue
        model_file = versions[-1] / MODEL_FILES[platform]
        if not model_file.is_file():
            problems.append(f"{folder.name}: {model_file.relative_to(repo)} missing")
            continue
        max_batch = config.get("max_batch_size", [0])[0]
        if not isinstance(max_batch, int) or max_batch < 1:
            problems.append(f"{folder.name}: max_batch_size must be ≥ 1 for dynamic batching")
        if "dynamic_batching" not in config:
            problems.append(f"{folder.name}: no dynamic_batching")
        problems += _trt_ep_problems(folder.name, config, max_batch)
        inputs, outputs = config.get("input", []), config.get("output", [])
        if len(inputs) != 1 or len(outputs) != 1:
            problems.append(f"{folder.name}: expected one input and one output")
            continue
        if platform == ONNX_PLATFORM:
            graph = onnx.load(str(model_file), load_external_data=False).graph
            for label, declared, actual in (("input", inputs[0], graph.input[0]), ("output", outputs[0],
                                                                                   graph.output[0])):
                dims = [d.dim_value for d in actual.type.tensor_type.shape.dim][1:]
                if declared.get("name", [None])[0] != actual.name:
                    problems.append(f"{folder.name}: {label} name {declared.get('name')} vs model {actual.name!r}")
                if declared.get("dims") != dims:
                    problems.append(f"{folder.name}: {label} dims {declared.get('dims')} vs model {dims}")
                if declared.get("data_type", [None])[0] != "TYPE_FP32":
                    problems.append(f"{folder.name}: {label} data_type must be TYPE_FP32")
    return problems


def _trt_ep_problems(model: str, config: dict[str, list[object]], max_batch: object) -> list[str]:
    """A TensorRT EP block without caches or a profile covering max_batch_size rebuilds engines while serving."""
    accelerators = [a for o in config.get("optimization", []) for e in o.get("execution_accelerators", [])
                    for a in e.get("gpu_execution_accelerator", []) if a.get("name") == ["tensorrt"]]
    problems = []
    for accelerator in accelerators:
        params = {p["key"][0]: p["value"][0] for p in accelerator.get("parameters", [])}
        for key in ("trt_engine_cache_enable", "trt_engine_cache_path", "trt_profile_max_shapes"):
            if key not in params:
                problems.append(f"{model}: TensorRT EP without {key} (engines rebuilt while serving)")
        shapes = str(params.get("trt_profile_max_shapes", ""))
        match = re.search(r":(\d+)x", shapes)
        if match and isinstance(max_batch, int) and int(match.group(1)) < max_batch:
            problems.append(f"{model}: TensorRT EP profile max batch {match.group(1)} < max_batch_size {max_batch}")
    return problems
