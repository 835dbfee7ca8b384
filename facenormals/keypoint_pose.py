"""A face the face mesh misses (a profile): its crop square, head pose and mask from the face detection alone.

MediaPipe's face *detection* finds most profiles its face mesh gives up on (``benchmarks/profile_fallback.py``):
a box and 6 keypoints (the subject's right eye, left eye, nose tip, mouth centre, right and left ear tragion).
From them (:func:`detector_face`):

* **the crop square**: the box scaled :data:`BOX_TO_CROP`× about its centre. On training renders whose mesh
  failed (ict_profile_v3) the data engine's crops, what the network was trained on, are 1.46× the box (median;
  the crops are jittered, p10–p90 wide); the landmark square :func:`facenormals.geometry.face_crop` takes where
  both exist is 1.22–1.30× (by |yaw|; renders the mesh found, ``benchmarks/profile_fallback_calibrate.py``). The
  network scores the same within 0.3° over 1.24–1.60× (val_profile, zero prior: 18.3° at 1.24×, 18.0° at 1.46×,
  18.0° at 1.60×), so the trained framing;
* **a head pose**: the ICT-FaceKit mean face, weak perspective (the prior's orthographic crop space), posed so
  its points :data:`KEYPOINTS_CM` land on the keypoints (:func:`fit_keypoints`, a rotation grid). Those are where
  the detector puts each keypoint on the ICT head, triangulated from 646 training renders (ict_profile_v3,
  ict_paired_v6) with their ground-truth head rotations, shift and scale anchored on the ICT face's own eye, nose
  and mouth landmarks (``benchmarks/profile_fallback_calibrate.py``). The keypoints are coarse (median 5–10 px
  off the fitted head on 256² renders, ears ~18 px), so the pose is too (|yaw| error median 21° on val_profile's
  no-mesh images);
* **checks**: keypoints no head pose fits (:data:`MAX_KEYPOINT_RMS_PX`) are no face (a detection on hair or
  an ear), nor is one that does not look turned (:data:`MIN_PROFILE_YAW_DEG`: the mesh would have found it) or
  a tiny one (:data:`MIN_BOX_SIDE_PX`);
* **estimated landmarks**: the posed face's 478 MediaPipe-landmark vertices (:func:`posed_landmarks`), whose
  hull is the face's mask, as the landmark hull is for a face with a mesh (on val_profile's no-mesh images the
  hull holds 83 % of the true face mask, 74 % of it inside the true mask).

The network gets **no prior** for such a face (``depth`` None: the all-zero prior a prior model saw in training
for faces without landmarks): measured on val_profile's no-mesh images (``benchmarks/profile_fallback_priors.py``),
the posed mean face as a prior makes the shipped network worse: 22.0° vs 18.0° with no prior on the same crops;
on the ideal (stored) crop 23.4°, and 23.1° even with the true head rotation, vs 16.3° (README "Faces the mesh
misses").

Convention: crop points are crop pixels, x right, y **up**, z toward the camera (:mod:`facenormals.ict_fit`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from facenormals.geometry import CROP_SIZE, SquareBox, crop_matrix, transform_points
from facenormals.ict_fit import NUM_EXPRESSION_MODES, NUM_IDENTITY_MODES, IctFace, IctFit, load_ict_face

NUM_KEYPOINTS = 6
# Each detector keypoint on the ICT model (cm, ICT's frame: +x the subject's left, +y up, +z out of the face).
# benchmarks/profile_fallback_calibrate.py; re-anchored (session 11, ≤ 0.4 mm) on the landmarks' surface points
KEYPOINTS_CM = np.array([[-3.94, 2.97, 9.59], [4.27, 2.84, 9.64], [0.01, 0.12, 12.37], [-0.28, -2.75, 11.64],
                         [-8.50, 1.45, 5.71], [8.52, 1.08, 5.87]])
BOX_TO_CROP = 1.46  # crop side ÷ detection box side: the training crops of faces the mesh misses (median)
BOX_OFFSET = (0.0, 0.0)  # crop centre − box centre, in box sides (x right, y down): the training crops' median
# Keypoints no head pose fits are not a face: on training renders (ict_profile_v3) whose mesh failed, the fit's
# keypoint rms in the 256² crop is ≤ 15 px for 97 % of the 134 detections the mesh rejects on the face and above it
# for 6 of the 9 off it (hair, an ear); the detection score separates them worse (≥ 0.55 keeps 79 % and 5 of the 9;
# benchmarks/results/profile_fallback/calibrate.json).
MAX_KEYPOINT_RMS_PX = 15.0
# The fallback is for profiles: the mesh finds nearly every face turned less (197 of val_ict_v2's 200), so a
# detection it rejects that does not look turned is taken for no face. Real photos show why: the astronaut photo,
# its mirror image, the mirrored pair and two of ../shared's photos give 10 detections the mesh rejects (a suit
# badge, a flag, a seam, a hand; scores 0.53–0.71, as high as true profiles'). These checks turn 9 away (those the
# keypoint check passes fit |yaw| ≤ 39°); the tenth, a hand in two_people.jpg, fits a 63° profile within 5 px:
# nothing in a detection tells it from a face. On the training renders above 82 % of the on-face detections the
# mesh rejects fit |yaw| ≥ 45° (85 % ≥ 40°, 94 % ≥ 20°), and 4 of the 9 off-face ones do.
MIN_PROFILE_YAW_DEG = 45.0
MIN_BOX_SIDE_PX = 32.0  # smaller detections get no fallback (one above, 39°, is 15 px): too few pixels to trust


def detector_square(cx: float, cy: float, side: float, ratio: float = BOX_TO_CROP,
                    offset: tuple[float, float] = BOX_OFFSET) -> SquareBox:
    """The crop square of a face detection box (centre, side in frame pixels): where its landmark crop would be."""
    return SquareBox(cx + offset[0] * side, cy + offset[1] * side, side * ratio)


def _grid_rotations() -> np.ndarray:
    """Head rotations to try (R = R_y(yaw) · R_x(pitch) · R_z(roll), :meth:`IctFit.euler_deg`'s angles): N×3×3."""
    yaw, pitch, roll = (np.radians(a) for a in np.meshgrid(np.arange(-90.0, 90.1, GRID_STEP_DEG[0]),
                                                           np.arange(-30.0, 30.1, GRID_STEP_DEG[1]),
                                                           np.arange(-30.0, 30.1, GRID_STEP_DEG[1]), indexing="ij"))
    yaw, pitch, roll = yaw.ravel(), pitch.ravel(), roll.ravel()
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)

    def stack(rows: list[list[np.ndarray]]) -> np.ndarray:
        return np.stack([np.stack(row, axis=-1) for row in rows], axis=-2)

    ry = stack([[np.cos(yaw), zero, np.sin(yaw)], [zero, one, zero], [-np.sin(yaw), zero, np.cos(yaw)]])
    rx = stack([[one, zero, zero], [zero, np.cos(pitch), -np.sin(pitch)], [zero, np.sin(pitch), np.cos(pitch)]])
    rz = stack([[np.cos(roll), -np.sin(roll), zero], [np.sin(roll), np.cos(roll), zero], [zero, zero, one]])
    return ry @ rx @ rz


GRID_STEP_DEG = (3.0, 6.0)  # yaw; pitch and roll (±30°): finer than the keypoints' accuracy (median 20° of yaw)
_ROTATIONS = _grid_rotations()
_PROJECTED = np.einsum("nij,kj->nki", _ROTATIONS[:, :2], KEYPOINTS_CM)  # N×6×2: each rotation's keypoints, cm


def _best_pose(target: np.ndarray, weights: np.ndarray) -> tuple[int, float, np.ndarray]:
    """Over every grid rotation, the weighted least-squares scale and shift (closed form): the best
    (rotation index, scale, shift)."""
    w = weights / weights.sum()
    mean_p = np.einsum("k,nkd->nd", w, _PROJECTED)
    mean_t = w @ target
    centred_p = _PROJECTED - mean_p[:, None]
    centred_t = target - mean_t
    cross = np.einsum("k,nkd,kd->n", w, centred_p, centred_t)
    power = np.einsum("k,nkd,nkd->n", w, centred_p, centred_p)
    cost = np.where(cross > 0, -cross * cross / power, np.inf)  # Σw|Tc|² is constant; scale > 0 only
    best = int(np.argmin(cost))
    scale = float(cross[best] / power[best])
    return best, scale, mean_t - scale * mean_p[best]


def fit_keypoints(keypoints_crop: np.ndarray) -> IctFit:
    """The ICT mean face posed onto 6 detector keypoints (crop pixels x right, y up; 6×2): an :class:`IctFit` with
    zero identity and expression, depth translation 0, ``rms_px`` the keypoint residual (crop pixels).

    Weak perspective: every rotation of a grid (|yaw| ≤ 90°, pitch and roll ≤ 30°) with its closed-form scale and
    shift; then once more with each keypoint weighted by 1/√max(residual, 5 px) (a soft-L1 step: a misplaced ear
    pulls less). ~1 ms.
    """
    target = np.asarray(keypoints_crop, dtype=np.float64)
    if target.shape != (NUM_KEYPOINTS, 2) or not np.isfinite(target).all():
        raise ValueError(f"expected 6 finite keypoints (6×2 crop pixels), got shape {target.shape}")
    best, scale, shift = _best_pose(target, np.ones(NUM_KEYPOINTS))
    residual = np.linalg.norm(scale * _PROJECTED[best] + shift - target, axis=1)
    best, scale, shift = _best_pose(target, 1.0 / np.sqrt(np.maximum(residual, 5.0)))
    residual = np.linalg.norm(scale * _PROJECTED[best] + shift - target, axis=1)
    return IctFit(_ROTATIONS[best], scale, np.array([shift[0], shift[1], 0.0]),
                  np.zeros(NUM_IDENTITY_MODES, np.float32), np.zeros(NUM_EXPRESSION_MODES, np.float32),
                  float(np.sqrt(np.mean(residual ** 2))))


def keypoints_in_crop(keypoints_px: np.ndarray, crop_matrix: np.ndarray) -> np.ndarray:
    """Frame-pixel keypoints (6×2) → crop points x right, y up (6×2)."""
    crop_xy = transform_points(keypoints_px, crop_matrix)
    return np.stack([crop_xy[:, 0], -crop_xy[:, 1]], axis=1)


def posed_landmarks(fit: IctFit, crop_matrix: np.ndarray, face: IctFace | None = None) -> np.ndarray:
    """The posed face's MediaPipe-landmark surface points in frame pixels (478×2 float32): where its landmarks would be."""
    from facenormals.geometry import invert_affine

    face = face if face is not None else load_ict_face()
    crop = _landmark_points(face) * fit.scale @ fit.rotation.T + fit.translation
    crop_xy = np.stack([crop[:, 0], -crop[:, 1]], axis=1)
    return transform_points(crop_xy, invert_affine(crop_matrix)).astype(np.float32)


@lru_cache(maxsize=2)
def _landmark_points(face: IctFace) -> np.ndarray:
    return face.landmark_points(face.neutral.astype(np.float64))


def detector_face(cx: float, cy: float, side: float, keypoints_px: np.ndarray,
                  min_yaw_deg: float = MIN_PROFILE_YAW_DEG) -> tuple[SquareBox, np.ndarray] | None:
    """A face detection (box centre and side, 6×2 keypoints, frame pixels) → (its crop square, the posed mean
    face's 478 landmark vertices in frame pixels: the face's estimated landmarks, float32 478×2); None when no
    head pose fits the keypoints within :data:`MAX_KEYPOINT_RMS_PX`, the pose is not a profile or the box is under
    :data:`MIN_BOX_SIDE_PX` (taken for no face)."""
    if side < MIN_BOX_SIDE_PX:
        return None
    square = detector_square(cx, cy, side)
    matrix = crop_matrix(square, CROP_SIZE)
    fit = fit_keypoints(keypoints_in_crop(keypoints_px, matrix))
    if not (fit.rms_px <= MAX_KEYPOINT_RMS_PX and abs(fit.euler_deg()[0]) >= min_yaw_deg):
        return None
    return square, posed_landmarks(fit, matrix)
