"""Issue 17: outputs never destroy inputs, bad inputs are clear errors, every face of a group photo is found.

Each test makes its own bad file and runs the real command (a subprocess, as a user would) or the real component.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from pipeline_media import count_video_frames, face_photo, moving_face_frames, small_checkpoint, write_video
from test_run_cli import run_cli

from facenormals.atomic import OutputError, check_output, write_text_atomic
from facenormals.faces import StillFaceDetector
from facenormals.fileio import DataError, check_model_file, read_normals, write_rgb

READ_ONLY = Path("/sys/kernel")  # refuses new files even to root (tests often run as root, where chmod is no bar)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lost")
    return {"ckpt": small_checkpoint(root / "small.safetensors"),
            "video": write_video(root / "clip.mp4", moving_face_frames(8))}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_args(media: dict[str, Path]) -> list[str]:
    return ["--model", str(media["ckpt"]), "--backend", "torch", "--headless"]


# ------------------------------------------------------------------------------------------ outputs vs inputs


def test_out_naming_the_input_video_is_refused(media, tmp_path):
    before = digest(media["video"])
    proc = run_cli("--source", f"video:{media['video']}", "--out", str(media["video"]), "--frames", "2",
                   *model_args(media), cwd=tmp_path)
    assert proc.returncode == 1 and "is also an input" in proc.stderr and str(media["video"]) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert digest(media["video"]) == before and count_video_frames(media["video"]) == 8


def test_existing_out_is_kept_without_overwrite(media, tmp_path):
    other = tmp_path / "holiday.mp4"
    other.write_bytes(b"someone's video")
    proc = run_cli("--source", f"video:{media['video']}", "--out", str(other), *model_args(media), cwd=tmp_path)
    assert proc.returncode == 1 and "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert other.read_bytes() == b"someone's video"


def test_out_naming_a_folder_is_refused_and_leaves_nothing(media, tmp_path):
    folder = tmp_path / "video.mp4"
    folder.mkdir()
    proc = run_cli("--source", f"video:{media['video']}", "--out", str(folder), *model_args(media), cwd=tmp_path)
    assert proc.returncode == 1 and "is a folder" in proc.stderr and "wrote" not in proc.stderr
    assert list(tmp_path.iterdir()) == [folder] and not list(folder.iterdir())


def test_default_out_takes_a_free_name_and_stale_maps_are_refused_then_replaced(media, tmp_path):
    earlier = tmp_path / "facenormals-run.mp4"
    earlier.write_bytes(b"earlier run")
    maps = tmp_path / "maps" / "normals"
    maps.mkdir(parents=True)
    for i in range(3):
        (maps / f"{i + 10:06d}.png").write_bytes(b"old")
    refused = run_cli("--source", f"video:{media['video']}", "--save-dir", str(tmp_path / "maps"), "--frames", "2",
                      *model_args(media), cwd=tmp_path)
    assert refused.returncode == 1 and "already holds 3 normal maps" in refused.stderr
    assert len(list(maps.iterdir())) == 3
    # No --out, no display: the default video name is taken, so a new one is chosen and said.
    proc = run_cli("--source", f"video:{media['video']}", "--frames", "2", *model_args(media), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert earlier.read_bytes() == b"earlier run" and "facenormals-run.mp4 exists and is kept" in proc.stderr
    assert count_video_frames(tmp_path / "facenormals-run-1.mp4") == 2
    replaced = run_cli("--source", f"video:{media['video']}", "--save-dir", str(tmp_path / "maps"), "--frames", "2",
                       "--overwrite", *model_args(media), cwd=tmp_path)
    assert replaced.returncode == 0, replaced.stderr
    assert "removed 3 normal maps of an earlier run" in replaced.stderr
    assert sorted(p.name for p in maps.iterdir()) == ["000000.png", "000001.png"]


def test_outputs_in_unwritable_places_fail_before_the_run(media, tmp_path):
    if not READ_ONLY.is_dir():
        pytest.skip(f"{READ_ONLY} not present")
    for option, value in (("--report", READ_ONLY / "report.json"), ("--save-dir", READ_ONLY / "maps"),
                          ("--out", READ_ONLY / "out.mp4")):
        proc = run_cli("--source", f"video:{media['video']}", option, str(value), *model_args(media), cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "cannot write there" in proc.stderr and str(READ_ONLY) in proc.stderr and "Traceback" not in proc.stderr
        assert "backend" not in proc.stderr  # refused before the model was loaded


def test_video_too_large_for_mpeg4_says_so_before_any_map_is_lost(media, tmp_path):
    images = tmp_path / "big"
    write_rgb(images / "wide.png", np.zeros((64, 4200, 3), np.uint8))
    proc = run_cli("--source", f"images:{images}", "--view", "side", "--out", str(tmp_path / "big.mp4"),
                   *model_args(media), cwd=tmp_path)
    assert proc.returncode == 1 and "8400×64 are too large for an MPEG-4" in proc.stderr
    assert "Traceback" not in proc.stderr  # an OSError is a one-line error too
    assert not list(tmp_path.glob(".*partial*"))


def test_check_output_names_the_reason(tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"x")
    with pytest.raises(OutputError, match="also an input"):
        check_output(tmp_path / "." / "in.mp4", "--out", overwrite=True, inputs=[source])
    assert check_output(source, "--out", overwrite=True) == source


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_files_respect_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
        write_rgb(tmp_path / "b.png", face_photo())
    finally:
        os.umask(old)
    for name in ("a.json", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------------------------------------ model files


def _onnx(path: Path, inputs: dict[str, list[int]], outputs: dict[str, list[int]], meta: dict[str, str]) -> Path:
    """A real ONNX graph: each output the Identity of the first input."""
    first = next(iter(inputs))
    graph = helper.make_graph(
        [helper.make_node("Identity", [first], [name]) for name in outputs], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def bad_models(root: Path) -> dict[str, tuple[Path, str]]:
    text = root / "notes.onnx"
    text.write_text("this is not a model\n")
    ckpt = root / "broken.safetensors"
    ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    meta = {"convention": "camera", "size": "64"}
    return {
        "text": (text, "not a readable ONNX model"),
        "checkpoint": (ckpt, "not a safetensors checkpoint"),
        "foreign": (_onnx(root / "blur.onnx", {"x": [1, 3, 64, 64]}, {"y": [1, 3, 64, 64]}, {}),
                    "needs input 'image' and output 'normals'"),
        "no-metadata": (_onnx(root / "plain.onnx", {"image": [1, 3, 64, 64]}, {"normals": [1, 3, 64, 64]}, {}),
                        "no 'convention' metadata"),
        "tiny": (_onnx(root / "tiny.onnx", {"image": [1, 3, 4, 4]}, {"normals": [1, 3, 4, 4]},
                       {**meta, "size": "4"}), "at least 32"),
    }


def test_model_files_are_checked_by_one_function(tmp_path):
    for path, message in bad_models(tmp_path).values():
        with pytest.raises(DataError, match=message) as err:
            check_model_file(path)
        assert str(path) in str(err.value)


def test_run_refuses_a_text_file_named_onnx(media, tmp_path):
    path, message = bad_models(tmp_path)["text"]
    proc = run_cli("--source", f"video:{media['video']}", "--model", str(path), "--headless", cwd=tmp_path)
    assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------- still images, group photos


def tiled_faces(count: int = 12, cell: int = 200, face: int = 120) -> np.ndarray:
    """``count`` faces (the astronaut, mirrored every other tile, at several sizes) tiled 4 across on grey."""
    photo = face_photo()
    rows = -(-count // 4)
    canvas = np.full((rows * cell, 4 * cell, 3), 90, np.uint8)
    for i in range(count):
        side = face - 8 * (i % 3)
        tile = cv2.resize(photo if i % 2 else photo[:, ::-1], (side, side), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, 4)
        y, x = r * cell + (cell - side) // 2, c * cell + (cell - side) // 2
        canvas[y:y + side, x:x + side] = tile
    return canvas


@pytest.fixture(scope="module")
def still_detector():
    detector = StillFaceDetector(max_faces=12)
    yield detector
    detector.close()


def test_twelve_tiled_faces_are_found(still_detector):
    faces = still_detector.detect(tiled_faces())
    assert len(faces) >= 10
    centres = {(round(f.box.cx) // 200, round(f.box.cy) // 200) for f in faces}
    assert len(centres) == len(faces)  # one face per tile, none counted twice


@pytest.mark.shared
def test_group_photo_every_face_found(shared_data, still_detector):
    from facenormals.fileio import read_rgb

    faces = still_detector.detect(read_rgb(shared_data / "photos" / "multi_face.jpg"))
    assert len(faces) == 5
    assert all(f.landmarks.shape == (478, 2) and np.isfinite(f.landmarks).all() for f in faces)


def test_image_folder_names_maps_after_inputs_and_detects_each_still(media, tmp_path):
    folder = tmp_path / "photos"
    write_rgb(folder / "a_two.png", tiled_faces(2))
    (folder / "b_broken.jpg").write_text("not an image")
    write_rgb(folder / "c_single.png", face_photo())
    proc = run_cli("--source", f"images:{folder}", "--save-dir", str(tmp_path / "maps"), "--max-faces", "2",
                   *model_args(media), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 unreadable images: b_broken.jpg" in proc.stderr
    maps = tmp_path / "maps" / "normals"
    assert sorted(p.name for p in maps.iterdir()) == ["a_two.png", "c_single.png"]
    two, single = (np.any(read_normals(maps / name) != 0, axis=2) for name in ("a_two.png", "c_single.png"))
    # both faces of the first image, and the single face of the last one (no tracking carried over)
    assert two[:, :200].any() and two[:, 200:].any() and single.sum() > 0.05 * single.size


# ------------------------------------------------------------------------------------------------- Python API


def test_api_list_keeps_good_images_and_names_bad_ones_by_index(media, tmp_path, still_detector):
    from facenormals.api import FaceNormals, ImageError

    fn = FaceNormals(model=media["ckpt"], backend="torch", detector=still_detector)
    missing = tmp_path / "missing.png"
    batch = [face_photo(), None, missing, np.zeros((0, 0, 3), np.uint8), tiled_faces(2)]
    with pytest.warns(RuntimeWarning, match="image 1"):
        results = fn(batch)
    assert len(results) == 5 and len(results[0]) == 1 and len(results[4]) == 2
    for index in (1, 2, 3):
        assert isinstance(results[index], ImageError) and results[index].index == index
        assert str(results[index]).startswith(f"image {index} (")
    assert str(missing) in str(results[2]) and "0×0" in str(results[3])
    with pytest.raises(ValueError, match=r"missing\.png"):
        fn(missing)  # a single image still raises: nothing else to keep


# ---------------------------------------------------------------------------------------------------- RGB-D


GOOD_K = {"width": 64, "height": 48, "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5, "depth_scale_m": 0.001}
COLOUR = {"width": 64, "height": 48, "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5}


@pytest.mark.parametrize(("change", "message"), [
    ({"depth_scale_m": [0.001]}, "depth_scale_m must be a number, got [0.001]"),
    ({"depth_scale_m": "abc"}, 'depth_scale_m must be a number, got "abc"'),
    ({"fx": "abc"}, 'fx must be a number, got "abc"'),
    ({"color": COLOUR, "depth_to_color": {"rotation": "I"}}, 'rotation must be 3×3 numbers, got "I"'),
    ({"color": COLOUR, "depth_to_color": {"translation_m": [0, "x", 0]}}, "translation_m must be 3 numbers"),
])
def test_malformed_intrinsics_name_the_file_and_field(tmp_path, change, message):
    from media import write_rgbd_folder

    from facenormals.realtime.sources.base import SourceError, open_source

    folder = write_rgbd_folder(tmp_path / "scan", intrinsics={**GOOD_K, **change})
    with pytest.raises(SourceError) as err:
        open_source(f"rgbd:{folder}")
    assert message in str(err.value) and str(folder / "intrinsics.json") in str(err.value)


def test_saturated_depth_is_missing_not_65_metres(tmp_path):
    from media import write_rgbd_folder

    from facenormals.realtime.sources.base import open_source

    folder = write_rgbd_folder(tmp_path / "scan", frames=2)
    saturated = np.full((48, 64), 65535, np.uint16)
    saturated[10:20, 10:20] = 800
    cv2.imwrite(str(folder / "depth" / "0001.png"), saturated)
    with open_source(f"rgbd:{folder}") as source:
        first, second = list(source)
        assert source.invalid_depth_frames == 1
    assert first.depth.max() == 1000 and second.depth.max() == 800 and (second.depth == 0).sum() == 48 * 64 - 100


def test_eval_json_in_an_unwritable_place_fails_before_scoring(tmp_path, capsys):
    from facenormals.cli import main

    if not READ_ONLY.is_dir():
        pytest.skip(f"{READ_ONLY} not present")
    empty = tmp_path / "not-yet-a-dataset"  # scoring would fail on it: the --json check must come first
    code = main(["eval", "--data", str(empty), "--model", "fast", "--json", str(READ_ONLY / "scores.json")])
    err = capsys.readouterr().err
    assert code == 1 and "--json" in err and "cannot write there" in err and str(empty) not in err
    code = main(["bench", "--source", f"video:{empty}.mp4", "--json", str(READ_ONLY / "bench.json")])
    err = capsys.readouterr().err
    assert code == 1 and "--json" in err and "cannot write there" in err  # before the source is opened


# ------------------------------------------------------------------------- every consumer of a model file

def _api(path: Path) -> None:
    from facenormals.api import FaceNormals

    FaceNormals(model=path, backend="ort-cpu" if path.suffix == ".onnx" else "torch")


def _backend(path: Path) -> None:
    from facenormals.export.prepare import create_backend

    create_backend("auto", path)


def _cli(*argv: str) -> None:
    from facenormals.cli import main

    code = main(list(argv))
    assert code == 1
    raise DataError(f"exit {code}")  # the message itself is on stderr: read by the test through capsys


@pytest.mark.parametrize("consumer", ["api", "create_backend", "eval", "calibrate int8", "export trt"])
def test_every_model_consumer_refuses_bad_model_files_naming_them(media, tmp_path, capsys, consumer):
    """One check (fileio.check_model_file) behind every door a model file comes in by: same error, no traceback."""
    data = tmp_path / "data"
    from test_eval import _sphere_set

    _sphere_set(data, count=1)
    for kind, (path, message) in bad_models(tmp_path).items():
        if consumer in ("calibrate int8", "export trt") and path.suffix != ".onnx":
            continue
        call = {"api": lambda p: _api(p), "create_backend": lambda p: _backend(p),
                "eval": lambda p: _cli("eval", "--data", str(data), "--model", str(p)),
                "calibrate int8": lambda p: _cli("calibrate", "int8", "--onnx", str(p), "--images", str(data),
                                                 "--out", str(tmp_path / "q.onnx")),
                "export trt": lambda p: _cli("export", "trt", "--onnx", str(p), "--out", str(tmp_path / "m.engine"))}
        with pytest.raises(DataError) as err:
            call[consumer](path)
        said = str(err.value) + capsys.readouterr().err
        assert message in said and str(path) in said and "Traceback" not in said, (kind, said)
    assert not (tmp_path / "q.onnx").exists() and not (tmp_path / "m.engine").exists()


# ----------------------------------------------------------------------------------------- export outputs

@pytest.fixture(scope="module")
def exported(media, tmp_path_factory) -> Path:
    from facenormals.export.onnx_export import export_onnx

    return export_onnx(media["ckpt"], tmp_path_factory.mktemp("onnx") / "small.onnx", check_parity=False).path


def test_export_never_writes_over_an_input_or_an_existing_file_unasked(media, tmp_path, capsys):
    from facenormals.cli import main

    ckpt_before = digest(media["ckpt"])
    other = tmp_path / "holiday.onnx"
    other.write_bytes(b"someone's file")
    assert main(["export", "onnx", "--model", str(media["ckpt"]), "--out", str(other), "--no-parity"]) == 1
    assert "already exists" in capsys.readouterr().err and other.read_bytes() == b"someone's file"
    assert main(["export", "onnx", "--model", str(media["ckpt"]), "--out", str(media["ckpt"]), "--no-parity",
                 "--overwrite"]) == 1
    assert "is also an input" in capsys.readouterr().err and digest(media["ckpt"]) == ckpt_before
    assert main(["export", "onnx", "--model", str(media["ckpt"]), "--out", str(other), "--no-parity",
                 "--overwrite"]) == 0
    check_model_file(other)  # replaced, when asked, by a real export
    if READ_ONLY.is_dir():
        assert main(["export", "onnx", "--model", str(media["ckpt"]), "--out", str(READ_ONLY / "m.onnx")]) == 1
        assert "cannot write there" in capsys.readouterr().err


def test_export_failing_parity_is_not_written(media, tmp_path, capsys, monkeypatch):
    """The parity check runs before the rename: a failing export never lands at --out (kept only when asked)."""
    from facenormals.cli import main
    from facenormals.export import parity

    monkeypatch.setitem(parity.TOLERANCE_DEG, "fp32", -1.0)  # a real export and check, a bar nothing can meet
    out, report = tmp_path / "m.onnx", tmp_path / "parity.json"
    out.write_bytes(b"the previous export")
    argv = ["export", "onnx", "--model", str(media["ckpt"]), "--out", str(out), "--report", str(report), "--overwrite"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{out} not written: it fails the parity check" in err and "--keep-failed" in err
    assert out.read_bytes() == b"the previous export" and sorted(p.name for p in tmp_path.iterdir()) == [
        "m.onnx", "parity.json"]  # no temporary file left behind
    assert '"passed": false' in report.read_text()
    assert main([*argv, "--keep-failed"]) == 1
    assert "written only because of --keep-failed" in capsys.readouterr().err
    check_model_file(out)


def test_calibrate_int8_checks_its_outputs_before_calibrating(exported, tmp_path, capsys):
    from facenormals.cli import main

    before = digest(exported)
    images = tmp_path / "photos"
    write_rgb(images / "face.png", face_photo())
    base = ["calibrate", "int8", "--onnx", str(exported), "--images", str(images)]
    assert main([*base, "--out", str(exported), "--overwrite"]) == 1
    assert "is also an input" in capsys.readouterr().err and digest(exported) == before
    taken = tmp_path / "taken.onnx"
    taken.write_bytes(b"keep me")
    assert main([*base, "--out", str(taken)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "calibrating" not in err and taken.read_bytes() == b"keep me"


# ------------------------------------------------------------------------------------------ train, eval

def test_train_steps_zero_is_refused_not_the_full_run(tmp_path, capsys):
    from facenormals.cli import main

    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "fast_prior.toml"
    assert main(["train", "--config", str(config), "--steps", "0", "--run-dir", str(tmp_path / "run")]) == 1
    assert "--steps must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_eval_resizes_crops_to_the_model_and_refuses_non_square(media, tmp_path, capsys):
    """300² crops (the encoder cannot halve 300 five times) are scored at the model's 64² and resized back."""
    from test_eval import _onnx_model, _sphere_set

    from facenormals.cli import main
    from facenormals.dataset import DatasetWriter

    data = _sphere_set(tmp_path / "big", count=1, size=300)
    assert main(["eval", "--data", str(data), "--model", str(media["ckpt"])]) == 0
    assert "300×300 crops resized to the model's 64×64 input" in capsys.readouterr().err
    # an exact model (normals = decode(image)) at a fixed 64²: resizing costs only a little accuracy
    exact = onnx.load(str(_onnx_model(tmp_path / "exact.onnx", None)))
    for value_info in (*exact.graph.input, *exact.graph.output):
        for dim, side in zip(value_info.type.tensor_type.shape.dim[2:], (64, 64), strict=True):
            dim.dim_value = side
    onnx.save(exact, str(tmp_path / "exact64.onnx"))
    out = tmp_path / "scores.json"
    assert main(["eval", "--data", str(data), "--model", str(tmp_path / "exact64.onnx"), "--json", str(out),
                 "--no-mirror"]) == 0  # one pass: the colour-decoding model is not mirror-symmetric (test_eval)
    import json

    assert json.loads(out.read_text())["sets"]["big"]["mean_deg"] < 5.0
    wide = DatasetWriter(tmp_path / "wide", normal_format="npy")
    mask = np.zeros((64, 96), bool)
    mask[16:48, 32:64] = True
    normals = np.zeros((64, 96, 3), np.float32)
    normals[..., 2] = 1.0
    wide.write("w0", mask, image=np.full((64, 96, 3), 128, np.uint8), normals=normals)
    assert main(["eval", "--data", str(tmp_path / "wide"), "--model", str(media["ckpt"])]) == 1
    assert "96×64 crops are not square" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ RGB-D in the API

def test_api_treats_saturated_depth_as_missing_with_a_warning(media):
    from facenormals.api import FaceNormals

    image = face_photo()
    h, w = image.shape[:2]
    camera = np.array([[500.0, 0, w / 2], [0, 500.0, h / 2], [0, 0, 1]])
    fn = FaceNormals(model=media["ckpt"], backend="torch")
    with pytest.warns(RuntimeWarning, match="saturated or beyond 16 m are treated as missing"):
        faces = fn(image, depth=np.full((h, w), 65535, np.uint16), intrinsics=camera)
    assert len(faces) == 1 and faces[0].depth is None  # no face placed 65 m away
    good = fn(image, depth=np.full((h, w), 800, np.uint16), intrinsics=camera)
    assert abs(float(np.nanmedian(good[0].depth)) - 0.8) < 0.05


# ------------------------------------------------------------------------------- live loop, fault injection

class FailingSink:
    """A real sink's failure mode (disk full) on the ``at``-th frame it is given."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def write(self, result, image) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise OSError(28, "No space left on device")

    def close(self) -> None:
        pass


class FlakyBackend:
    """The real backend, raising on its ``at``-th batch as a lost device would."""

    def __init__(self, backend, at: int) -> None:
        self.backend, self.at, self.calls = backend, at, 0
        self.input_size, self.in_chans, self.name = backend.input_size, backend.in_chans, backend.name
        self.prior_source = getattr(backend, "prior_source", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            raise RuntimeError("CUDA error: device lost")
        return self.backend(batch)


def _dying_source(video: Path, at: int):
    from facenormals.realtime.sources.base import SourceError, open_source

    with open_source(f"video:{video}") as source:
        for frame in source:
            if frame.id == at:
                raise SourceError(f"{video}: read failed at frame {at} (cable pulled)")
            yield frame


@pytest.mark.parametrize(("fault", "stage", "said"), [
    ("source", "capture", "cable pulled"), ("sink", "sink", "No space left"), ("backend", "infer", "device lost")])
def test_live_loop_fault_ends_clearly_with_every_earlier_frame_readable(media, tmp_path, fault, stage, said):
    from facenormals.export.prepare import create_backend
    from facenormals.faces import create_detector
    from facenormals.realtime.pipeline import Pipeline, PipelineError
    from facenormals.realtime.render import FrameRenderer, RenderState
    from facenormals.realtime.run_cli import report_json
    from facenormals.realtime.sinks import SaveDirSink, VideoSink
    from facenormals.realtime.sources.base import open_source

    backend = create_backend("torch", media["ckpt"], device="cpu")
    source = _dying_source(media["video"], 5) if fault == "source" else open_source(f"video:{media['video']}")
    if fault == "backend":
        backend = FlakyBackend(backend, at=6)
    video, maps = VideoSink(tmp_path / "out.mp4", fps=15), SaveDirSink(tmp_path / "maps", "png")
    sinks = [maps, video, *([FailingSink(at=6)] if fault == "sink" else [])]
    pipeline = Pipeline(source, create_detector(1), backend, FrameRenderer(RenderState(), "torch"), sinks,
                        handle_signals=False)
    with pytest.raises(PipelineError) as caught:
        pipeline.run()
    err, report = caught.value, caught.value.report
    assert err.stage == stage and err.frame_id == 5 and said in str(err)
    assert report.stopped_by == "error" and said in report.error and report.frames_out == 5
    assert report_json(report, "torch")["error"] == report.error  # --report says what happened
    # Frames before the fault are all on disk and readable; a sink that failed on frame 5 leaves the others' copy.
    assert count_video_frames(tmp_path / "out.mp4") == video.frames >= 5
    written = sorted((tmp_path / "maps" / "normals").glob("*.png"))
    assert [p.stem for p in written][:5] == [f"{i:06d}" for i in range(5)]
    assert all(read_normals(p).shape == (256, 256, 3) for p in written)
    assert not list(tmp_path.glob(".*partial*"))


def test_calibration_and_conversion_outputs_are_checked_first(tmp_path, capsys):
    """The same output check in the other writing verbs: calibrate camera/rgbd, convert-official."""
    from facenormals.cli import main

    kept = tmp_path / "calibration.json"
    kept.write_text('{"earlier": "calibration"}')
    (tmp_path / "boards").mkdir()
    pth = tmp_path / "model.pth"
    pth.write_bytes(b"the authors' weights")
    for argv, message in (
            (["calibrate", "camera", "--images", str(tmp_path / "boards"), "--board", "checkerboard:9x6:25",
              "--out", str(kept)], "already exists"),
            (["calibrate", "rgbd", "--boards", str(tmp_path / "boards"), "--board", "checkerboard:9x6:25",
              "--colour-calib", str(kept), "--out", str(kept), "--overwrite"], "is also an input"),
            (["convert-official", str(pth), "--out", str(pth), "--overwrite"], "is also an input"),
            (["convert-official", str(pth), "--out", str(kept)], "already exists")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert kept.read_text() == '{"earlier": "calibration"}' and pth.read_bytes() == b"the authors' weights"
