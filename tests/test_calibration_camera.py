"""Camera and RGB-D calibration on synthetic board images rendered with known intrinsics, distortion and poses."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facenormals.calibration.calibfile import Calibration, load_calibration, save_calibration
from facenormals.calibration.camera import BoardError, calibrate_camera, detect, list_images, parse_board
from facenormals.calibration.rgbd import calibrate_rgbd, find_rgbd_views
from facenormals.camera import Intrinsics
from facenormals.cli import main as cli_main
from facenormals.fileio import write_depth_mm

SIZE = (640, 480)
K = np.array([[610.0, 0, 322.0], [0, 604.0, 236.0], [0, 0, 1]])
DIST = np.array([-0.12, 0.06, 0.0005, -0.0004, 0.0])  # k3 = 0: an ordinary lens
CHECKER = "checkerboard:9x6:25"
PX_PER_MM = 4.0


def checker_texture(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Board image and the 3×3 map texture pixel → board mm (origin at the first inner corner)."""
    board = parse_board(spec)
    square = board.square_mm * PX_PER_MM
    cols, rows = board.pattern[0] + 1, board.pattern[1] + 1
    margin = square
    tex = np.full((int(rows * square + 2 * margin), int(cols * square + 2 * margin)), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                y0, x0 = int(margin + r * square), int(margin + c * square)
                tex[y0:int(y0 + square), x0:int(x0 + square)] = 0
    offset = margin + square  # the first inner corner
    # texture pixel x (its centre, as cv2.remap indexes it) spans [x, x + 1) in edge units:
    # board mm = (x + 0.5 - offset) / px_per_mm
    to_mm = np.array([[1 / PX_PER_MM, 0, (0.5 - offset) / PX_PER_MM], [0, 1 / PX_PER_MM, (0.5 - offset) / PX_PER_MM], [0, 0, 1]])
    return tex, to_mm


def charuco_texture(spec: str) -> tuple[np.ndarray, np.ndarray]:
    board = parse_board(spec)
    width_mm, height_mm = board.pattern[0] * board.square_mm, board.pattern[1] * board.square_mm
    margin = 40
    size = (int(width_mm * PX_PER_MM) + 2 * margin, int(height_mm * PX_PER_MM) + 2 * margin)
    tex = board.charuco().generateImage(size, marginSize=margin, borderBits=1)
    to_mm = np.array([[1 / PX_PER_MM, 0, (0.5 - margin) / PX_PER_MM], [0, 1 / PX_PER_MM, (0.5 - margin) / PX_PER_MM], [0, 0, 1]])
    return tex, to_mm


def render(texture: np.ndarray, to_mm: np.ndarray, k: np.ndarray, dist: np.ndarray, rvec: np.ndarray, tvec: np.ndarray,
           size: tuple[int, int] = SIZE) -> np.ndarray:
    """Exact inverse rendering: each output pixel is undistorted, cast onto the board plane, sampled from the texture."""
    u, v = np.meshgrid(np.arange(size[0], dtype=np.float64), np.arange(size[1], dtype=np.float64))
    normalised = cv2.undistortPoints(np.stack([u, v], -1).reshape(-1, 1, 2), k, dist,
                                     criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)).reshape(-1, 2)
    rotation, _ = cv2.Rodrigues(rvec)
    plane = np.column_stack([rotation[:, 0], rotation[:, 1], tvec])  # board (x, y, 1) → camera
    board_xy = np.linalg.inv(plane) @ np.vstack([normalised.T, np.ones(len(normalised))])
    tex_xy = np.linalg.inv(to_mm) @ (board_xy / board_xy[2])
    map_x = tex_xy[0].reshape(size[1], size[0]).astype(np.float32)
    map_y = tex_xy[1].reshape(size[1], size[0]).astype(np.float32)
    return cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=160)


def poses(count: int, seed: int = 0, centre_mm: tuple[float, float] = (100.0, 62.5), k: np.ndarray = K,
          size: tuple[int, int] = SIZE) -> list[tuple[np.ndarray, np.ndarray]]:
    """Varied board poses whose centre lands at random points of the middle of the image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        rvec = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(-0.3, 0.3)])
        rotation, _ = cv2.Rodrigues(rvec)
        pixel = np.array([rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1], 1.0])
        target = np.linalg.inv(k) @ pixel * rng.uniform(480, 620)
        out.append((rvec, target - rotation @ np.array([*centre_mm, 0.0])))
    return out


@pytest.fixture(scope="module")
def checker_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("checker")
    tex, to_mm = checker_texture(CHECKER)
    for i, (rvec, tvec) in enumerate(poses(10)):
        cv2.imwrite(str(folder / f"view{i:02d}.png"), render(tex, to_mm, K, DIST, rvec, tvec))
    cv2.imwrite(str(folder / "blank.png"), np.full(SIZE[::-1], 128, np.uint8))  # no board: must be rejected
    return folder


def test_renderer_matches_project_points(checker_images):
    board = parse_board(CHECKER)
    rvec, tvec = poses(8)[0]
    expected, _ = cv2.projectPoints(board.object_points().astype(np.float64), rvec, tvec, K, DIST)
    found = detect(board, cv2.imread(str(checker_images / "view00.png"), cv2.IMREAD_GRAYSCALE))
    assert found is not None
    assert np.abs(found[1] - expected.reshape(-1, 2)).max() < 0.25


def test_checkerboard_round_trip_recovers_intrinsics(checker_images):
    result = calibrate_camera(list_images(checker_images), parse_board(CHECKER), progress=False)
    intr = result.intrinsics
    assert abs(intr.fx / K[0, 0] - 1) < 0.005 and abs(intr.fy / K[1, 1] - 1) < 0.005
    assert abs(intr.cx - K[0, 2]) < 3 and abs(intr.cy - K[1, 2]) < 3
    # k1 and k2 trade off against each other; what matters is the lens mapping: project the same rays with
    # both models over the field the boards covered (ignoring the distortion would miss by ~5 px at its edge)
    rays = np.stack(np.meshgrid(np.linspace(-0.33, 0.33, 7), np.linspace(-0.23, 0.23, 5), [1.0]), -1).reshape(-1, 3)
    truth, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, DIST)
    recovered, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), intr.matrix(), np.array(intr.distortion))
    assert np.abs(truth - recovered).max() < 2.0
    assert result.rms_px < 0.3 and len(result.per_image_px) == 10
    assert result.rejected == ["blank.png"]


def test_charuco_round_trip(tmp_path):
    spec = "charuco:7x5:30:22:DICT_5X5_100"
    tex, to_mm = charuco_texture(spec)
    for i, (rvec, tvec) in enumerate(poses(8, seed=3, centre_mm=(105.0, 75.0))):
        cv2.imwrite(str(tmp_path / f"c{i}.png"), render(tex, to_mm, K, DIST, rvec, tvec))
    result = calibrate_camera(list_images(tmp_path), parse_board(spec), progress=False)
    assert abs(result.intrinsics.fx / K[0, 0] - 1) < 0.005 and abs(result.intrinsics.fy / K[1, 1] - 1) < 0.005


def test_cli_writes_a_loadable_calibration(checker_images, tmp_path, capsys):
    out = tmp_path / "calib.json"
    assert cli_main(["calibrate", "camera", "--images", str(checker_images), "--board", CHECKER, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "RMS reprojection error" in printed and "view03.png" in printed
    calib = load_calibration(out)
    assert abs(calib.colour.fx / K[0, 0] - 1) < 0.005
    assert json.loads(out.read_text())["quality"]["rejected"] == ["blank.png"]


def test_bad_board_specs_and_folders(tmp_path):
    bad = ("checkerboard:9x6", "grid:9x6:25", "charuco:5x5:30:40:DICT_5X5_100", "charuco:5x5:30:20:NOPE", "checkerboard:1x6:25")
    for spec in bad:
        with pytest.raises(BoardError, match="board"):
            parse_board(spec)
    with pytest.raises(BoardError, match="not found"):
        list_images(tmp_path / "missing")
    with pytest.raises(BoardError, match="no images"):
        list_images(tmp_path)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((48, 64), np.uint8))
    with pytest.raises(BoardError, match="at least 3"):
        calibrate_camera(list_images(tmp_path), parse_board(CHECKER), progress=False)


def test_rgbd_board_extrinsics_and_depth_scale(tmp_path):
    """Depth (ir) camera and colour camera see the same board; recover their pose and the depth units."""
    k_ir = np.array([[380.0, 0, 161.0], [0, 380.0, 119.0], [0, 0, 1]])
    ir_size = (320, 240)
    rotation, _ = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))
    translation_mm = np.array([-25.0, 1.5, 2.0])
    scale = 0.00025  # metres per raw unit
    tex, to_mm = checker_texture(CHECKER)
    board = parse_board(CHECKER)
    for sub in ("colour", "ir", "depth"):
        (tmp_path / sub).mkdir()
    for i, (rvec, tvec) in enumerate(poses(5, seed=5, k=k_ir, size=ir_size)):
        cv2.imwrite(str(tmp_path / "ir" / f"v{i}.png"), render(tex, to_mm, k_ir, np.zeros(5), rvec, tvec, ir_size))
        r_board, _ = cv2.Rodrigues(rvec)
        rvec_c, _ = cv2.Rodrigues(rotation @ r_board)
        tvec_c = rotation @ tvec + translation_mm
        cv2.imwrite(str(tmp_path / "colour" / f"v{i}.png"), render(tex, to_mm, K, DIST, rvec_c.ravel(), tvec_c))
        # the board plane's depth (mm) along each ir pixel, in raw units
        u, v = np.meshgrid(np.arange(ir_size[0]), np.arange(ir_size[1]))
        rays = np.stack([(u - k_ir[0, 2]) / k_ir[0, 0], (v - k_ir[1, 2]) / k_ir[1, 1], np.ones_like(u, float)], -1)
        z_mm = (r_board[:, 2] @ tvec) / (rays @ r_board[:, 2])
        raw = np.round(z_mm / 1000.0 / scale).astype(np.uint16)
        write_depth_mm(tmp_path / "depth" / f"v{i}.png", raw)
    views = find_rgbd_views(board, tmp_path)
    colour_intr = Intrinsics(*SIZE, K[0, 0], K[1, 1], K[0, 2], K[1, 2], tuple(DIST))  # as from `calibrate camera`
    ir_intr = Intrinsics(*ir_size, k_ir[0, 0], k_ir[1, 1], k_ir[0, 2], k_ir[1, 2])
    calib = calibrate_rgbd(board, views, colour_intr, ir_intr)
    assert np.abs(calib.translation_m * 1000 - translation_mm).max() < 1.0
    angle = np.degrees(np.linalg.norm(cv2.Rodrigues(calib.rotation @ rotation.T)[0]))
    assert angle < 0.2
    assert calib.depth_scale_m == pytest.approx(scale, rel=0.005)
    assert calib.has_depth and calib.depth.width == 320
    # the same through the CLI, with the intrinsics from calibration files
    save_calibration(tmp_path / "colour.json", Calibration(colour_intr))
    save_calibration(tmp_path / "ir.json", Calibration(ir_intr))
    out = tmp_path / "rgbd.json"
    assert cli_main(["calibrate", "rgbd", "--boards", str(tmp_path), "--board", CHECKER, "--colour-calib",
                     str(tmp_path / "colour.json"), "--depth-calib", str(tmp_path / "ir.json"), "--out", str(out)]) == 0
    loaded = load_calibration(out)
    assert np.allclose(loaded.translation_m, calib.translation_m) and loaded.depth_scale_m == calib.depth_scale_m
