"""Camera intrinsics and distortion from images of a calibration board (OpenCV).

Board specs (what ``--board`` takes):

* ``checkerboard:COLSxROWS:SIZE_MM`` — COLS×ROWS **inner corners** (OpenCV's pattern size), squares SIZE_MM wide;
  the top-left square black, one even and one odd square count (e.g. 9x6 corners = 10×7 squares), so that
  corners are numbered the same in every view.
* ``charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT`` — COLS×ROWS **squares**, ArUco dictionary DICT
  (e.g. ``DICT_5X5_100`` or ``5X5_100``), as made by ``cv2.aruco.CharucoBoard``.

Board coordinates are millimetres in the board plane (z = 0); results use the OpenCV camera model
(pixel centres at integers, distortion ``k1 k2 p1 p2 k3``).

>>> parse_board("checkerboard:9x6:25").pattern
(9, 6)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facenormals.camera import Intrinsics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class BoardError(ValueError):
    """A board spec that cannot be parsed, or images where no board can be used."""


@dataclass(frozen=True)
class Board:
    kind: str                       # "checkerboard" | "charuco"
    pattern: tuple[int, int]        # checkerboard: inner corners; charuco: squares (cols, rows)
    square_mm: float
    marker_mm: float = 0.0
    dictionary: str = ""

    def object_points(self) -> np.ndarray:
        """Checkerboard inner corners (N×3 mm, row by row as OpenCV reports them)."""
        cols, rows = self.pattern
        grid = np.mgrid[0:cols, 0:rows].T.reshape(-1, 2).astype(np.float32) * self.square_mm
        return np.hstack([grid, np.zeros((len(grid), 1), np.float32)])

    def charuco(self) -> cv2.aruco.CharucoBoard:
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard(self.pattern, self.square_mm, self.marker_mm, dictionary)


def parse_board(spec: str) -> Board:
    """``checkerboard:COLSxROWS:SIZE_MM`` or ``charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT`` → :class:`Board`."""
    parts = spec.split(":")
    usage = "expected checkerboard:COLSxROWS:SIZE_MM or charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT"
    try:
        kind = parts[0].lower()
        cols, rows = (int(v) for v in parts[1].lower().split("x"))
        if kind == "checkerboard" and len(parts) == 3:
            board = Board(kind, (cols, rows), float(parts[2]))
        elif kind == "charuco" and len(parts) == 5:
            name = parts[4].upper()
            name = name if name.startswith("DICT_") else f"DICT_{name}"
            if not hasattr(cv2.aruco, name):
                raise BoardError(f"board {spec!r}: unknown ArUco dictionary {parts[4]!r} (e.g. DICT_5X5_100)")
            board = Board(kind, (cols, rows), float(parts[2]), float(parts[3]), name)
        else:
            raise BoardError(f"board {spec!r}: {usage}")
    except (IndexError, ValueError) as err:
        if isinstance(err, BoardError):
            raise
        raise BoardError(f"board {spec!r}: {usage}") from err
    if min(board.pattern) < 2 or board.square_mm <= 0:
        raise BoardError(f"board {spec!r}: needs at least 2×2 and a positive square size")
    if board.kind == "charuco" and not 0 < board.marker_mm < board.square_mm:
        raise BoardError(f"board {spec!r}: the marker must be smaller than the square")
    return board


def detect(board: Board, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Board points in one grayscale image: (object points N×3 mm, image points N×2 px), or None."""
    if board.kind == "checkerboard":
        # the classic detector + cornerSubPix: on rendered boards with known geometry the sector-based
        # findChessboardCornersSB biased the focal length by +0.4 %, this by < 0.1 %
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        found, corners = cv2.findChessboardCorners(gray, board.pattern, flags=flags)
        if not found:
            return None
        spacing = np.median(np.linalg.norm(np.diff(corners.reshape(-1, 2), axis=0), axis=1))
        half = int(np.clip(spacing * 0.4, 2, 11))  # search window well inside one square
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 60, 1e-4)
        corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), criteria)
        return board.object_points(), canonical_order(gray, corners.reshape(-1, 2).astype(np.float32), board.pattern)
    detector = cv2.aruco.CharucoDetector(board.charuco())
    corners, ids, _, _ = detector.detectBoard(gray)
    if ids is None or len(ids) < 6:  # fewer than 6 corners constrain a homography too weakly
        return None
    obj, img = board.charuco().matchImagePoints(corners, ids)
    return obj.reshape(-1, 3).astype(np.float32), img.reshape(-1, 2).astype(np.float32)


def canonical_order(gray: np.ndarray, corners: np.ndarray, pattern: tuple[int, int]) -> np.ndarray:
    """Number the corners row by row from the one next to the black top-left square, as the board does.

    Detectors may start at any end of the grid. A front-facing board keeps its handedness in the image
    (row direction × column direction > 0), which fixes mirrored orders; on a board with one even and one odd
    square count, the square diagonally outside corner 0 is black only in the right one of the two remaining
    (180°-rotated) orders. So every view, and both cameras of a stereo pair, number corners alike.
    """
    cols, rows = pattern
    grid = corners.reshape(rows, cols, 2)
    along, down = grid[0, 1] - grid[0, 0], grid[1, 0] - grid[0, 0]
    if along[0] * down[1] - along[1] * down[0] < 0:
        grid = grid[:, ::-1]
    first, diagonal = grid[0, 0], grid[1, 1] - grid[0, 0]
    h, w = gray.shape

    def sample(p: np.ndarray) -> float:
        x, y = int(np.clip(round(p[0]), 0, w - 1)), int(np.clip(round(p[1]), 0, h - 1))
        return float(gray[y, x])

    if sample(first - 0.5 * diagonal) > sample(first + 0.5 * diagonal):  # outer square lighter: rotated 180°
        grid = grid[::-1, ::-1]
    return np.ascontiguousarray(grid.reshape(-1, 2))


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise BoardError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise BoardError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def read_gray(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise BoardError(f"{path}: not a readable image")
    return image


@dataclass(frozen=True)
class CameraCalibration:
    intrinsics: Intrinsics
    rms_px: float
    per_image_px: dict[str, float]
    rejected: list[str] = field(default_factory=list)   # images where the board was not found
    poses: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name → (rvec, tvec mm)


def calibrate_views(board: Board, views: dict[str, tuple[np.ndarray, np.ndarray]], image_size: tuple[int, int],
                    rational: bool = False, rejected: list[str] | None = None) -> CameraCalibration:
    """Intrinsics from detected views (name → object/image points); ``image_size`` is (width, height)."""
    if len(views) < 3:
        raise BoardError(f"need the board in at least 3 images, found it in {len(views)}"
                         + (f" (not found in: {', '.join(rejected)})" if rejected else ""))
    names = list(views)
    # k3 is left at 0 for ordinary lenses: with boards that do not reach the image corners it trades off
    # against the focal length; the rational model (wide lenses) frees it along with k4..k6
    flags = cv2.CALIB_RATIONAL_MODEL if rational else cv2.CALIB_FIX_K3
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-10)
    rms, matrix, dist, rvecs, tvecs, _, _, per_view = cv2.calibrateCameraExtended(
        [views[n][0] for n in names], [views[n][1] for n in names], image_size, None, None, flags=flags, criteria=criteria)
    intrinsics = Intrinsics(image_size[0], image_size[1], float(matrix[0, 0]), float(matrix[1, 1]), float(matrix[0, 2]),
                            float(matrix[1, 2]), tuple(float(k) for k in dist.ravel()))
    errors = {n: float(e) for n, e in zip(names, per_view.ravel(), strict=True)}
    view_poses = {n: (r.ravel(), t.ravel()) for n, r, t in zip(names, rvecs, tvecs, strict=True)}
    return CameraCalibration(intrinsics, float(rms), errors, list(rejected or []), view_poses)


def find_views(board: Board, images: list[Path], progress: bool = True) -> tuple[dict, list[str], tuple[int, int]]:
    """Detect the board in every image. Returns (views, rejected names, image size); sizes must agree."""
    from tqdm import tqdm

    views: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rejected: list[str] = []
    size: tuple[int, int] | None = None
    for path in tqdm(images, desc="board", unit="img", disable=not progress):
        gray = read_gray(path)
        this = (gray.shape[1], gray.shape[0])
        if size is not None and this != size:
            raise BoardError(f"{path}: {this[0]}×{this[1]} differs from the other images ({size[0]}×{size[1]})")
        size = this
        found = detect(board, gray)
        if found is None:
            rejected.append(path.name)
        else:
            views[path.name] = found
    assert size is not None
    return views, rejected, size


def calibrate_camera(images: list[Path], board: Board, rational: bool = False, progress: bool = True) -> CameraCalibration:
    """Detect the board in every image and calibrate; images without a board are listed as rejected."""
    views, rejected, size = find_views(board, images, progress)
    return calibrate_views(board, views, size, rational, rejected)
