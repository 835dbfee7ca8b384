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
