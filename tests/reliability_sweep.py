"""Issue 17's sweep: every class of bad input tried against the real commands and the API, counted.

    PYTHONPATH=... python tests/reliability_sweep.py [--json FILE]

Each case runs in this process (``facenormals.cli.main``, ``FaceNormals``, the threaded pipeline) on files made
here. A case is a **crash** when an exception escapes the command or a traceback is printed; **silent-wrong** when
the command succeeds where it should refuse, refuses without naming the file or value, or gives a wrong result;
**input lost** when any file that existed before the case (inputs, earlier outputs) changed. The README's
reliability table quotes this script's counts. Not collected by pytest (no ``test_`` prefix): the cases are also
regression tests in ``tests/test_nothing_lost.py`` and the files it names.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media import truncate, write_rgbd_folder
from pipeline_media import face_photo, moving_face_frames, small_checkpoint, write_video
from test_eval import _onnx_model, _sphere_set
from test_nothing_lost import COLOUR, GOOD_K, READ_ONLY, bad_models, tiled_faces

from facenormals.fileio import read_rgb, write_rgb

Check = Callable[[], str | None]  # after a case that should succeed: None, or what is wrong


@dataclass
class Case:
    group: str
    name: str
    argv: list[str] | None = None  # a CLI case: expects exit 1 with every ``said`` string on stderr
    call: Callable[[], object] | None = None  # an API case: expects an exception (or ``check`` when it succeeds)
    said: tuple[str, ...] = ()
    check: Check | None = None  # the case should succeed; this says whether its result is right


def _digests(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def run_case(case: Case, root: Path) -> tuple[str, str]:
    """(outcome, detail): outcome is ok | crash | silent-wrong | input-lost."""
    from facenormals.cli import main

    before = _digests(root)
    err = io.StringIO()
    outcome, detail = "ok", ""
    # log records (a stage's traceback among them) go to this case's stderr, whichever case set logging up
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(err) for h in handlers]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if case.argv is not None:
                code = main(case.argv)
                if code != (1 if case.check is None else 0):
                    outcome, detail = "silent-wrong", f"exit {code}"
            else:
                case.call()
                if case.check is None:
                    outcome, detail = "silent-wrong", "no error raised"
        except SystemExit as stop:  # argparse
            if stop.code != 2 or case.check is not None:
                outcome, detail = "crash", f"SystemExit {stop.code}"
        except AssertionError as error:  # a result checked inside the call is wrong
            outcome, detail = "silent-wrong", str(error)[:300]
        except Exception as error:  # an API case's expected error: checked below
            if case.argv is not None or case.check is not None:
                outcome, detail = "crash", f"{type(error).__name__}: {error}"
            else:
                print(f"{type(error).__name__}: {error}", file=err)
    for handler, stream in zip(handlers, streams, strict=True):
        handler.setStream(stream)
    text = err.getvalue()
    if outcome == "ok" and "Traceback" in text:
        outcome, detail = "crash", text[text.index("Traceback"):][:300]
    if outcome == "ok" and case.check is None:
        missing = [s for s in case.said if s not in text]
        if missing:
            outcome, detail = "silent-wrong", f"message lacks {missing}: {text.strip()[-300:]}"
    if outcome == "ok" and case.check is not None:
        problem = case.check()
        if problem:
            outcome, detail = "silent-wrong", problem
    changed = [str(p) for p, d in before.items() if not p.exists() or _digests_one(p) != d]
    if changed:
        outcome, detail = "input-lost", f"changed: {changed}"
    last = text.strip().splitlines()[-1][:160] if text.strip() else ""
    return outcome, detail or last


def _digests_one(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_cases(root: Path, out: Path) -> list[Case]:
    """``root``: inputs (watched for changes); ``out``: where the commands may write."""
    ckpt = small_checkpoint(root / "small.safetensors")
    video = write_video(root / "clip.mp4", moving_face_frames(4))
    model = ["--model", str(ckpt), "--backend", "torch", "--headless"]
    run = ["run", "--source", f"video:{video}", *model]
    cases: list[Case] = []

    # ---- outputs versus inputs, existing and unwritable outputs
    existing = root / "holiday.mp4"
    existing.write_bytes(b"someone's video")
    (root / "folder.mp4").mkdir()
    stale = root / "earlier" / "normals"
    stale.mkdir(parents=True)
    (stale / "000009.png").write_bytes(b"earlier map")
    cases += [
        Case("outputs", "run --out is the input video", [*run, "--out", str(video)], said=("also an input", str(video))),
        Case("outputs", "run --out is the model", [*run, "--out", str(ckpt)], said=("also an input",)),
        Case("outputs", "run --report is the input video", [*run, "--report", str(video), "--out", str(out / "a.mp4")],
             said=("also an input",)),
        Case("outputs", "run --out exists", [*run, "--out", str(existing)], said=("already exists", "--overwrite")),
        Case("outputs", "run --out is a folder", [*run, "--out", str(root / "folder.mp4")], said=("is a folder",)),
        Case("outputs", "run --save-dir holds an earlier run's maps", [*run, "--save-dir", str(root / "earlier")],
             said=("already holds 1 normal maps",)),
    ]
    big = root / "wide"
    write_rgb(big / "wide.png", np.zeros((64, 4200, 3), np.uint8))
    cases.append(Case("outputs", "run --out too large for MPEG-4",
                      ["run", "--source", f"images:{big}", *model, "--view", "side", "--out", str(out / "big.mp4")],
                      said=("too large for an MPEG-4",)))
    images = root / "photos"
    write_rgb(images / "face.png", face_photo())
    exported = root / "small.onnx"
    from facenormals.export.onnx_export import export_onnx

    export_onnx(ckpt, exported, check_parity=False)
    spheres = _sphere_set(root / "spheres", count=1)
    export = ["export", "onnx", "--model", str(ckpt), "--no-parity"]
    int8 = ["calibrate", "int8", "--onnx", str(exported), "--images", str(images)]
    cases += [
        Case("outputs", "export onnx --out exists", [*export, "--out", str(existing)], said=("already exists",)),
        Case("outputs", "export onnx --out is the checkpoint", [*export, "--out", str(ckpt), "--overwrite"],
             said=("also an input",)),
        Case("outputs", "calibrate int8 --out is the --onnx", [*int8, "--out", str(exported), "--overwrite"],
             said=("also an input",)),
        Case("outputs", "calibrate int8 --out exists", [*int8, "--out", str(existing)], said=("already exists",)),
        Case("outputs", "eval --json is the model", ["eval", "--data", str(spheres), "--model", str(ckpt), "--json",
                                                      str(ckpt)], said=("also an input",)),
    ]
    calibration = root / "calibration.json"
    calibration.write_text('{"earlier": "calibration"}')
    (root / "boards").mkdir()
    pth = root / "model.pth"
    pth.write_bytes(b"the authors' weights")
    board = ["--board", "checkerboard:9x6:25"]
    cases += [
        Case("outputs", "calibrate camera --out exists", ["calibrate", "camera", "--images", str(root / "boards"),
                                                          *board, "--out", str(calibration)], said=("already exists",)),
        Case("outputs", "calibrate rgbd --out is --colour-calib",
             ["calibrate", "rgbd", "--boards", str(root / "boards"), *board, "--colour-calib", str(calibration),
              "--out", str(calibration), "--overwrite"], said=("also an input",)),
        Case("outputs", "convert-official --out is the .pth", ["convert-official", str(pth), "--out", str(pth),
                                                               "--overwrite"], said=("also an input",)),
    ]
    if READ_ONLY.is_dir():
        ro = READ_ONLY
        cases += [Case("outputs", f"{what} in a read-only folder", argv, said=("cannot write there", str(ro)))
                  for what, argv in (
                      ("run --out", [*run, "--out", str(ro / "o.mp4")]),
                      ("run --report", [*run, "--report", str(ro / "r.json"), "--out", str(out / "b.mp4")]),
                      ("run --save-dir", [*run, "--save-dir", str(ro / "maps")]),
                      ("export onnx --out", [*export, "--out", str(ro / "m.onnx")]),
                      ("export onnx --report", ["export", "onnx", "--model", str(ckpt), "--out", str(out / "m.onnx"),
                                                "--report", str(ro / "p.json")]),
                      ("calibrate int8 --out", [*int8, "--out", str(ro / "q.onnx")]),
                      ("eval --json", ["eval", "--data", str(spheres), "--model", str(ckpt), "--json",
                                       str(ro / "s.json")]),
                      ("bench --json", ["bench", "--source", f"video:{video}", "--model", str(ckpt), "--backend",
                                        "torch", "--json", str(ro / "b.json")]))]

    # ---- broken sources and calibration files
    text_video = root / "notes.mp4"
    text_video.write_text("not a video")
    cut = truncate(write_video(root / "cut.mp4", moving_face_frames(6)), 0.5)
    (root / "empty_images").mkdir()
    broken = root / "broken_images"
    broken.mkdir()
    (broken / "a.jpg").write_text("not an image")
    (broken / "b.png").write_bytes(b"")
    calib = root / "calib.json"
    calib.write_text("{not json")
    source = ["run", *model, "--out", str(out / "c.mp4")]
    cases += [
        Case("sources", "missing video", [*source, "--source", f"video:{root / 'none.mp4'}"], said=("none.mp4",)),
        Case("sources", "truncated video", [*source, "--source", f"video:{cut}"], said=(str(cut),)),
        Case("sources", "text file named .mp4", [*source, "--source", f"video:{text_video}"], said=(str(text_video),)),
        Case("sources", "empty image folder", [*source, "--source", f"images:{root / 'empty_images'}"],
             said=("empty_images",)),
        Case("sources", "image folder of broken files", [*source, "--source", f"images:{broken}"],
             said=("broken_images",)),
        Case("sources", "unknown source kind", [*source, "--source", "tape:1"], said=("tape",)),
        Case("sources", "missing --calibration", [*run, "--calibration", str(root / "none.json")], said=("none.json",)),
        Case("sources", "malformed --calibration", [*run, "--calibration", str(calib)], said=(str(calib),)),
    ]
    no_k = write_rgbd_folder(root / "rgbd_no_k")
    (no_k / "intrinsics.json").unlink()
    cases.append(Case("sources", "RGB-D folder without intrinsics.json", [*source, "--source", f"rgbd:{no_k}"],
                      said=("intrinsics.json",)))
    for i, (change, message) in enumerate((
            ({"depth_scale_m": [0.001]}, "depth_scale_m must be a number"), ({"depth_scale_m": "abc"}, "depth_scale_m"),
            ({"fx": "abc"}, "fx must be a number"),
            ({"color": COLOUR, "depth_to_color": {"rotation": "I"}}, "rotation must be 3×3 numbers"),
            ({"color": COLOUR, "depth_to_color": {"translation_m": [0, "x", 0]}}, "translation_m must be 3 numbers"))):
        folder = write_rgbd_folder(root / f"rgbd_bad{i}", intrinsics={**GOOD_K, **change})
        cases.append(Case("sources", f"intrinsics.json {json.dumps(change)[:40]}",
                          [*source, "--source", f"rgbd:{folder}"], said=(message, "intrinsics.json")))

    # ---- model files, through every consumer
    bad = bad_models(root)
    engine = root / "empty.engine"
    engine.write_bytes(b"")
    pt = root / "weights.pt"
    pt.write_bytes(b"torch pickle")
    bad |= {"empty engine": (engine, "empty TensorRT engine"), "unknown suffix": (pt, "unknown model format")}
    for kind, (path, message) in bad.items():
        said = (message, str(path))
        cases += [
            Case("model files", f"run --model {kind}", ["run", "--source", f"video:{video}", "--model", str(path),
                                                        "--headless", "--out", str(out / "d.mp4")], said=said),
            Case("model files", f"eval --model {kind}", ["eval", "--data", str(spheres), "--model", str(path)],
                 said=said),
            Case("model files", f"API FaceNormals(model={kind})", call=_api_model(path), said=said),
        ]
        if path.suffix == ".onnx":
            cases.append(Case("model files", f"calibrate int8 --onnx {kind}",
                              ["calibrate", "int8", "--onnx", str(path), "--images", str(images), "--out",
                               str(out / "e.onnx")], said=said))

    # ---- outputs that succeed: named after inputs, the usual file mode, a failing export not written
    stills = root / "stills"
    write_rgb(stills / "a_two.png", tiled_faces(2))
    (stills / "b_broken.jpg").write_text("not an image")
    write_rgb(stills / "c_single.png", face_photo())
    maps = out / "still-maps"
    cases += [
        Case("outputs", "images:DIR with a broken file: maps named after inputs, each still detected",
             ["run", "--source", f"images:{stills}", *model, "--max-faces", "2", "--save-dir", str(maps)],
             check=lambda: _still_maps(maps / "normals", {"a_two.png": 2, "c_single.png": 1})),
        Case("outputs", "export failing its parity check", call=lambda: _parity_failure(ckpt, out, existing),
             check=lambda: None),
        Case("outputs", "atomic files under umask 077 and 022", call=lambda: _umask(out), check=lambda: None),
    ]
    shared = Path("/work/shared/data/photos")
    if (shared / "two_people.jpg").is_file():
        pair = root / "pair"
        for name in ("two_people.jpg", "single_face.jpg"):
            write_rgb(pair / name.replace(".jpg", ".png"), read_rgb(shared / name))
        pair_maps = out / "pair-maps"
        cases.append(Case("faces", "images:DIR two_people.jpg then single_face.jpg: 2 + 1 faces",
                          ["run", "--source", f"images:{pair}", *model, "--max-faces", "4", "--save-dir",
                           str(pair_maps)],
                          check=lambda: _still_maps(pair_maps / "normals", {"two_people.png": 2, "single_face.png": 1})))
    saturated_scan = write_rgbd_folder(root / "rgbd_saturated", frames=2)
    cv2.imwrite(str(saturated_scan / "depth" / "0001.png"), np.full((48, 64), 65535, np.uint16))
    cases.append(Case("sources", "RGB-D frame of depth 65535", call=lambda: _saturated_source(saturated_scan),
                      check=lambda: None))

    # ---- training and evaluation arguments
    config = Path(__file__).resolve().parents[1] / "training" / "configs" / "fast_prior.toml"
    typo = root / "typo.toml"
    typo.write_text(config.read_text().replace("run_dir", "rundir", 1))
    big_set = _sphere_set(root / "spheres300", count=1, size=300)
    exact = _fixed(root / "exact64.onnx")
    scores = out / "exact300.json"
    cases += [
        Case("training/eval", "train --steps 0", ["train", "--config", str(config), "--steps", "0"],
             said=("--steps must be at least 1",)),
        Case("training/eval", "train --steps -3", ["train", "--config", str(config), "--steps", "-3"],
             said=("--steps must be at least 1",)),
        Case("training/eval", "train missing config", ["train", "--config", str(root / "none.toml")],
             said=("none.toml",)),
        Case("training/eval", "train config with a typo'd key", ["train", "--config", str(typo)], said=("rundir",)),
        Case("training/eval", "eval on an empty folder", ["eval", "--data", str(root / "empty_images"), "--model",
                                                           str(ckpt)], said=("empty_images",)),
        Case("training/eval", "eval on 300² crops (resized to the model's 64²)",
             ["eval", "--data", str(big_set), "--model", str(exact), "--json", str(scores), "--no-mirror"],
             check=lambda: None if json.loads(scores.read_text())["sets"]["spheres300"]["mean_deg"] < 5.0
             else "exact model scored ≥ 5° after the resize"),
    ]

    # ---- the Python API: per-image errors, depth range
    from facenormals.api import FaceNormals

    api = FaceNormals(model=ckpt, backend="torch")
    photo = face_photo()
    height, width = photo.shape[:2]
    camera = np.array([[500.0, 0, width / 2], [0, 500.0, height / 2], [0, 0, 1]])
    cases += [
        Case("API", f"list with {label}", call=_api_list(api, photo, bad_image, index=1), check=lambda: None)
        for label, bad_image in (("None", None), ("a missing path", root / "none.png"),
                                 ("a 0×0 array", np.zeros((0, 0, 3), np.uint8)),
                                 ("a text file", text_video), ("a 2-D float array", np.zeros((8, 8), np.float64)))]
    saturated = np.full((height, width), 65535, np.uint16)
    cases += [
        Case("API", "depth 65535 everywhere", call=lambda: None,
             check=lambda: _depth_check(api, photo, saturated, camera)),
        Case("API", "depth of the wrong size", call=lambda: api(photo, depth=saturated[:10], intrinsics=camera),
             said=("depth",)),
    ]

    # ---- group photos (StillFaceDetector)
    from facenormals.faces import StillFaceDetector

    detector = StillFaceDetector(max_faces=12)
    cases.append(Case("faces", "12 tiled faces: ≥ 10 found", call=lambda: None,
                      check=lambda: _faces(detector, tiled_faces(), 10)))
    group = Path("/work/shared/data/photos/multi_face.jpg")
    if group.is_file():
        cases.append(Case("faces", "multi_face.jpg: all 5 found", call=lambda: None,
                          check=lambda: _faces(detector, read_rgb(group), 5, exact=True)))

    # ---- the live loop: a fault mid-stream in each stage
    from test_nothing_lost import test_live_loop_fault_ends_clearly_with_every_earlier_frame_readable as live

    media = {"ckpt": ckpt, "video": write_video(root / "eight.mp4", moving_face_frames(8))}
    for fault, stage, said in (("source", "capture", "cable pulled"), ("sink", "sink", "No space left"),
                               ("backend", "infer", "device lost")):
        folder = out / f"live-{fault}"
        folder.mkdir()
        cases.append(Case("live loop", f"{fault} fails on frame 5", call=lambda f=folder, a=(fault, stage, said):
                          live(media, f, *a), check=lambda: None))
    return cases


def _still_maps(folder: Path, faces: dict[str, int]) -> str | None:
    """Each map named after its image, with a face region per expected face (columns of normals, left to right)."""
    from facenormals.fileio import read_normals

    names = sorted(p.name for p in folder.iterdir())
    if names != sorted(faces):
        return f"maps {names}, expected {sorted(faces)}"
    for name, count in faces.items():
        covered = np.any(read_normals(folder / name) != 0, axis=2)
        _, labels = cv2.connectedComponents(covered.astype(np.uint8))
        regions = int(labels.max())
        if regions < count:
            return f"{name}: {regions} face regions, expected {count}"
    return None


def _parity_failure(ckpt: Path, out: Path, existing: Path) -> None:
    from facenormals.cli import main
    from facenormals.export import parity

    target = out / "failing.onnx"
    target.write_bytes(b"the previous export")
    saved = dict(parity.TOLERANCE_DEG)
    parity.TOLERANCE_DEG["fp32"] = -1.0  # a bar nothing meets: the export and its check are real
    try:
        code = main(["export", "onnx", "--model", str(ckpt), "--out", str(target), "--overwrite"])
    finally:
        parity.TOLERANCE_DEG.update(saved)
    assert code == 1 and target.read_bytes() == b"the previous export", "a failing export replaced --out"
    assert not list(out.glob(".failing.onnx*")), "temporary file left behind"


def _umask(out: Path) -> None:
    import os
    import stat

    from facenormals.atomic import write_text_atomic

    for mask in (0o077, 0o022):
        old = os.umask(mask)
        try:
            write_text_atomic(out / f"mode{mask:o}.json", "{}")
            write_rgb(out / f"mode{mask:o}.png", face_photo())
        finally:
            os.umask(old)
        for suffix in ("json", "png"):
            mode = stat.S_IMODE((out / f"mode{mask:o}.{suffix}").stat().st_mode)
            assert mode == 0o666 & ~mask, f"mode {mode:o} under umask {mask:o}"


def _saturated_source(folder: Path) -> None:
    from facenormals.realtime.sources.base import open_source

    with open_source(f"rgbd:{folder}") as source:
        frames = list(source)
        assert source.invalid_depth_frames == 1, "saturated frame not counted"
    assert frames[1].depth.max() == 0, "65535 passed on as a distance"


def _api_model(path: Path) -> Callable[[], object]:
    def call() -> object:
        from facenormals.api import FaceNormals

        return FaceNormals(model=path, backend="ort-cpu" if path.suffix == ".onnx" else "torch")
    return call


def _api_list(api, photo: np.ndarray, bad: object, index: int) -> Callable[[], object]:
    def call() -> None:
        from facenormals.api import ImageError

        results = api([photo, bad, photo])
        if not (isinstance(results[index], ImageError) and results[index].index == index
                and len(results[0]) == 1 and len(results[2]) == 1):
            raise AssertionError(f"expected faces, ImageError(1), faces; got {results}")
    return call


def _depth_check(api, photo: np.ndarray, depth: np.ndarray, camera: np.ndarray) -> str | None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        faces = api(photo, depth=depth, intrinsics=camera)
    said = any("treated as missing" in str(w.message) for w in caught)
    return None if faces and faces[0].depth is None and said else "saturated depth fused or not reported"


def _faces(detector, image: np.ndarray, least: int, exact: bool = False) -> str | None:
    found = len(detector.detect(image))
    return None if (found == least if exact else found >= least) else f"{found} faces found"


def _fixed(path: Path) -> Path:
    """The exact decode model (normals = decode(image)) with a fixed 64² input."""
    import onnx

    model = onnx.load(str(_onnx_model(path, None)))
    for value_info in (*model.graph.input, *model.graph.output):
        for dim in value_info.type.tensor_type.shape.dim[2:]:
            dim.dim_value = 64
    onnx.save(model, str(path))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write every case's outcome as JSON")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="facenormals-sweep-") as tmp:
        root, out = Path(tmp) / "inputs", Path(tmp) / "outputs"
        root.mkdir()
        out.mkdir()
        cases = build_cases(root, out)
        rows = []
        for case in cases:
            outcome, detail = run_case(case, root)
            rows.append({"group": case.group, "case": case.name, "outcome": outcome, "detail": detail})
            print(f"{outcome:<12} {case.group:<14} {case.name:<55} {detail[:110]}", flush=True)
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        group = counts.setdefault(row["group"], {"cases": 0, "ok": 0, "crash": 0, "silent-wrong": 0, "input-lost": 0})
        group["cases"] += 1
        group[row["outcome"]] += 1
    print("\ngroup           cases  ok  crash  silent-wrong  input-lost")
    for group, c in counts.items():
        print(f"{group:<15} {c['cases']:>5} {c['ok']:>3} {c['crash']:>6} {c['silent-wrong']:>13} {c['input-lost']:>11}")
    total = len(rows)
    bad = sum(r["outcome"] != "ok" for r in rows)
    print(f"total {total} cases, {bad} not ok")
    if args.json:
        args.json.write_text(json.dumps({"counts": counts, "cases": rows}, indent=2) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
