"""An ICT-FaceKit face fitted to MediaPipe's landmarks every frame: a better coarse face than the 468-point mesh.

MediaPipe's mesh is 468 vertices and 852 facets; the same landmarks pin down a full morphable face far better
(issue 13: ~1–2° lower normal error on held-out real scans, with no training). Per face:

1. **Pose**: a weighted similarity (Umeyama) taking the current ICT shape's landmark points onto the
   landmarks in crop space. Each landmark is a fixed surface point (barycentric on one triangle), the point
   MediaPipe lands on on average over many rendered faces, so the fit's rows of the model are barycentric mixes.
2. **Shape**: identity and expression coefficients by regularised linear least squares on the landmark residuals
   in crop space, each landmark weighted by its inverse noise measured on training renders (the face outline,
   which slides on the cheek as the head turns, and the eyebrows come out lowest), and a strong Gaussian prior
   on the identity (coefficients are in units of the PCA standard deviation). Expression weights stay in ICT's
   [0, 1] range (an active-set pass).
3. A few alternations; a tracked face warm-starts from its previous coefficients and needs fewer.
4. A tracked face keeps one identity: each frame adds what it says about the identity to the track's pooled
   estimate (:mod:`facenormals.identity_track`), and the frame fits its pose and expression to that identity.
   Stills (no previous fit) fit their own identity as before.

A turned head hides the far half of the face: MediaPipe still places those landmarks, squeezed towards the
silhouette, and a rigid pose through them under-states the turn. From a fitted |yaw| of 20° to 40° the far
half's landmarks (those more than 1 cm from the midline on the side turning away) fade to a fifth of their
weight (a ramp, so a tracked face's prior does not jump as it turns).

The posed face (skin and eyeballs) is drawn by :func:`facenormals.prior.coarse_prior` with the mesh prior's
z-buffer: smooth vertex normals, orthographic in crop pixels.

Convention: crop points are crop pixels in our frame, x right, y **up**, z toward the camera, as produced by
:func:`facenormals.mesh_prior.landmarks_in_crop` / ``crop_points_from_pixels``. The model is in ICT's frame
(+x subject's left = image right, +y up, +z out of the face), centimetres.

The asset ``assets/ict_face.npz`` (the correspondence and a compact float16 model, MIT licence of ICT-FaceKit)
is derived by ``python -m facenormals.training.data.ict_correspondence`` (the model and the neutral-head vertices),
then ``python -m facenormals.training.data.ict_landmark_points`` (the landmarks' surface points).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from facenormals.identity_track import IdentityTrack
from facenormals.landmark_expression import LandmarkExpression, load_landmark_expression
from facenormals.landmark_identity import load_landmark_identity
from facenormals.similarity import weighted_similarity

ASSET = Path(__file__).resolve().parent / "assets" / "ict_face.npz"
# Per-landmark weights measured on training renders (inverse noise; ``training/data/ict_landmark_noise.py``).
LANDMARK_WEIGHTS = Path(__file__).resolve().parent / "assets" / "ict_landmark_weights.npy"
NUM_IDENTITY_MODES = 50
NUM_EXPRESSION_MODES = 53
# The fit's products are small (≤ 103×1404): BLAS threads only spin on them, 5–10× the CPU time of one thread
# (measured on the 2-core machine), so the fit runs its linear algebra on one thread.
_BLAS = ThreadpoolController()
NUM_FIT_POINTS = 468  # the iris points follow the gaze, which the fit does not model
# MediaPipe's FACEMESH_FACE_OVAL: these slide over the cheeks and jaw as the head turns.
FACE_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288,
             297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)


def barycentric_points(vertices: np.ndarray, corners: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
    """(N, …) points mixed from ``vertices`` (V×…) by N rows of three ``corners`` and their ``barycentric`` weights."""
    picked = np.asarray(vertices)[corners]  # N×3×…
    return (picked * barycentric.reshape(barycentric.shape + (1,) * (picked.ndim - 2))).sum(axis=1)


@dataclass(frozen=True)
class FitSettings:
    """Weights and priors of the fit. Regularisers are in cm² of landmark residual per unit coefficient²."""

    # a still's (and a per-frame fit's): 4 until session 42; since the prior is centred where the landmark identity
    # map puts it (sessions 30-31), the map's estimate is worth more than one view's fit (README "Coarse face")
    identity_prior: float = 64.0
    # a tracked face's, whose identity is pooled over its frames (below): 64 there wandered more on real video and
    # fitted the real scan's track worse than 4 (README "A stronger identity prior")
    track_identity_prior: float = 4.0
    expression_prior: float = 16.0  # 2 until session 6: stronger is closer on every set and steadier under light (README)
    depth_weight: float = 1.0  # MediaPipe's z relative to x/y (0.1–0.3 fitted val_james worse)
    measured_weights: bool = True  # per-landmark inverse noise measured on renders (README); False: the hand weights
    outline_weight: float = 0.3  # the hand weights' face outline (measured_weights=False)
    far_side_weight: float = 0.2  # the far half's weight factor once the head is turned far_side_yaw_deg[1]
    far_side_yaw_deg: tuple[float, float] = (20.0, 40.0)  # |yaw| where the far half starts / ends fading
    iterations: int = 4
    warm_iterations: int = 1
    # a tracked face's identity pooled over its frames (identity_track.py): memory in frames, and how many frames'
    # worth of evidence the pool counts as (1: the precision-weighted mean of the frames; more over-fits the
    # landmarks' bias on a real face). False: every frame fits its own identity, as a still does.
    track_identity: bool = True
    identity_memory_frames: float = 60.0
    identity_evidence: float = 1.0
    # the identity prior centred where the landmarks' learnt map puts it (landmark_identity.py), not at the mean
    # face: a tracked face's pooled over the track, a still's the map's still share of the way (one view's estimate
    # is noisier on a real face than on the renders the map learnt from)
    landmark_identity: bool = True
    # the expression ridge centred where the landmarks' learnt map puts the expressions (landmark_expression.py),
    # with the map's own weight, instead of at the neutral face with expression_prior (points off MediaPipe's
    # manifold keep that)
    landmark_expression: bool = True


@dataclass(frozen=True, eq=False)  # hashed by identity: the stacked basis is cached per instance
class IctFace:
    """The compact morphable model: ``neutral + identity·α + expression·β`` over face skin and eyeballs."""

    neutral: np.ndarray  # V×3 float32, cm
    identity: np.ndarray  # K_id × V × 3 float32
    expression: np.ndarray  # K_ex × V × 3 float32
    expression_names: tuple[str, ...]
    triangles: np.ndarray  # T×3 int64, counter-clockwise from outside
    landmark_vertices: np.ndarray  # (478,) the vertex nearest each MediaPipe landmark's surface point
    # Each landmark is a fixed surface point: barycentric weights on three vertices (one triangle), so it moves with
    # identity and expression as the mesh does. An asset without them puts each landmark on its vertex.
    landmark_corners: np.ndarray | None = None  # (478, 3) int64
    landmark_barycentric: np.ndarray | None = None  # (478, 3) float64, rows sum to 1

    def __post_init__(self) -> None:
        if self.landmark_corners is None:
            corners = np.repeat(self.landmark_vertices[:, None], 3, axis=1)
            barycentric = np.zeros(corners.shape)
            barycentric[:, 0] = 1.0
            object.__setattr__(self, "landmark_corners", corners)
            object.__setattr__(self, "landmark_barycentric", barycentric)

    def landmark_points(self, vertices: np.ndarray) -> np.ndarray:
        """(478, …) the landmarks' surface points on ``vertices`` (V×… : a shape, or a mode's rows)."""
        return barycentric_points(vertices, self.landmark_corners, self.landmark_barycentric)

    @property
    def basis(self) -> np.ndarray:
        """(K_id + K_ex) × V × 3: identity modes, then expressions."""
        return _stacked_basis(self)

    def shape(self, identity: np.ndarray, expression: np.ndarray) -> np.ndarray:
        """V×3 vertices (cm) for the given coefficients."""
        coeffs = np.concatenate([identity, expression]).astype(np.float32)
        return self.neutral + np.tensordot(coeffs, self.basis, axes=1)


@lru_cache(maxsize=4)
def _stacked_basis(face: IctFace) -> np.ndarray:
    return np.ascontiguousarray(np.concatenate([face.identity, face.expression]))


@lru_cache(maxsize=2)
def load_ict_face(path: str | Path = ASSET) -> IctFace:
    """The shipped asset (or another one written by the derivation script)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ICT fit asset missing (python -m facenormals.training.data.ict_correspondence)")
    with np.load(path, allow_pickle=False) as z:
        corners = z["landmark_corners"].astype(np.int64) if "landmark_corners" in z.files else None
        barycentric = z["landmark_barycentric"].astype(np.float64) if "landmark_barycentric" in z.files else None
        return IctFace(neutral=z["neutral"].astype(np.float32), identity=z["identity"].astype(np.float32),
                       expression=z["expression"].astype(np.float32),
                       expression_names=tuple(str(s) for s in z["expression_names"]),
                       triangles=z["triangles"].astype(np.int64), landmark_vertices=z["landmark_vertices"].astype(np.int64),
                       landmark_corners=corners, landmark_barycentric=barycentric)


@dataclass(frozen=True)
class IctFit:
    """A fitted face: crop-space similarity ``x_crop = scale · R · x_model + translation`` and coefficients."""

    rotation: np.ndarray  # 3×3
    scale: float  # crop pixels per cm
    translation: np.ndarray  # (3,)
    identity: np.ndarray  # (K_id,)
    expression: np.ndarray  # (K_ex,)
    rms_px: float  # weighted landmark residual after the fit, crop pixels
    # the tracked identity this fit continues (the next frame's warm start adds to it); None: not tracked
    identity_track: IdentityTrack | None = None

    def crop_points(self, face: IctFace) -> np.ndarray:
        """The fitted face's vertices in crop space (V×3)."""
        with _BLAS.limit(limits=1, user_api="blas"):
            shape = face.shape(self.identity, self.expression)
            shape *= self.scale  # in place: the same float32 product as ``self.scale * shape``, one array fewer
            points = shape @ self.rotation.T
            points += self.translation
            return points

    def euler_deg(self) -> tuple[float, float, float]:
        """Head pose: yaw (about y), pitch (about x), roll (about z), degrees, in our camera frame."""
        r = self.rotation
        yaw = np.degrees(np.arctan2(r[0, 2], r[2, 2]))
        pitch = np.degrees(np.arcsin(-np.clip(r[1, 2], -1.0, 1.0)))
        roll = np.degrees(np.arctan2(r[1, 0], r[1, 1]))
        return float(yaw), float(pitch), float(roll)


def point_weights(settings: FitSettings) -> np.ndarray:
    """Per-landmark weights of the 468 fitted points: the measured inverse noise, or the outline down-weighted."""
    if settings.measured_weights:
        return load_landmark_weights().copy()
    weights = np.ones(NUM_FIT_POINTS)
    weights[list(FACE_OVAL)] = settings.outline_weight
    return weights


@lru_cache(maxsize=2)
def load_landmark_weights(path: str | Path = LANDMARK_WEIGHTS) -> np.ndarray:
    """The shipped per-landmark weights (468,), median 1: each landmark's inverse mean squared fit residual."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: landmark weights missing (python -m facenormals.training.data.ict_landmark_noise)")
    weights = np.load(path, allow_pickle=False).astype(np.float64)
    if weights.shape != (NUM_FIT_POINTS,) or not (np.isfinite(weights).all() and (weights > 0).all()):
        raise ValueError(f"{path}: expected {NUM_FIT_POINTS} positive finite weights, got shape {weights.shape}")
    return weights


@dataclass(frozen=True, eq=False)
class _Design:
    """What the fit reuses across frames: the landmark rows of the model and the pose-free part of the normal matrix."""

    mean: np.ndarray  # N×3 landmark vertices of the neutral face
    basis: np.ndarray  # K×N×3, C-contiguous
    flat: np.ndarray  # K×3N view of ``basis``
    weights: np.ndarray  # (N,) per-landmark weights
    gram: np.ndarray  # K×K: Σ wᵢ Aᵢᵀ Aᵢ
    prior: np.ndarray  # (K,) ridge weights
    k_id: int
    sides: np.ndarray  # 2×N: the landmarks of the model's −x half, of its +x half (midline excluded)
    side_grams: np.ndarray  # 2×K×K: the part of ``gram`` from each half


MIDLINE_CM = 1.0  # landmarks this close to the model's symmetry plane belong to neither half


@lru_cache(maxsize=8)
def _design(face: IctFace, settings: FitSettings, tracked: bool = False) -> _Design:
    """The fit's precomputed landmark rows, weights and ridge; ``tracked``: a pooled identity's ridge."""
    if tracked:  # the still design's arrays, shared, with the track's identity ridge
        still = _design(face, settings)
        prior = still.prior.copy()
        prior[:still.k_id] = settings.track_identity_prior
        return replace(still, prior=prior)
    # each landmark's rows of the basis: its surface point's barycentric mix of three vertices' rows (a linear map)
    fitted = slice(0, NUM_FIT_POINTS)
    modes = np.moveaxis(face.basis.astype(np.float64), 0, 1)  # V×K×3: one row per vertex, as landmark_points takes
    basis = np.ascontiguousarray(np.moveaxis(face.landmark_points(modes)[fitted], 0, 1))
    weights = point_weights(settings)
    scaled = basis.reshape(len(basis), -1) * np.repeat(np.sqrt(weights), 3)
    prior = np.concatenate([np.full(len(face.identity), settings.identity_prior),
                            np.full(len(face.expression), settings.expression_prior)])
    mean = face.landmark_points(face.neutral.astype(np.float64))[fitted]
    x = mean[:, 0] - mean[:, 0].mean()
    sides = np.stack([x < -MIDLINE_CM, x > MIDLINE_CM])
    side_grams = np.stack([(scaled * np.repeat(side, 3)) @ scaled.T for side in sides])
    return _Design(mean, basis, basis.reshape(len(basis), -1), weights, scaled @ scaled.T, prior, len(face.identity),
                   sides, side_grams)


def far_side_fade(rotation: np.ndarray, settings: FitSettings) -> tuple[int, float]:
    """(which model half turns away: 0 for −x, 1 for +x; how much of its weight it loses, 0..1 − far_side_weight).

    Yaw about the camera's y axis moves the model's +x half away from the camera when it is positive.
    """
    yaw = np.degrees(np.arctan2(rotation[0, 2], rotation[2, 2]))
    start, end = settings.far_side_yaw_deg
    ramp = float(np.clip((abs(yaw) - start) / max(end - start, 1e-9), 0.0, 1.0))
    return int(yaw > 0), ramp * (1.0 - settings.far_side_weight)


def fit_landmarks(points: np.ndarray, face: IctFace | None = None, settings: FitSettings = FitSettings(),
                  previous: IctFit | None = None, identity: np.ndarray | None = None,
                  identity_mean: np.ndarray | None = None,
                  expression_map: LandmarkExpression | None = None) -> IctFit:
    """Fit pose, identity and expression to MediaPipe landmarks in crop space (N ≥ 468 × 3, our frame).
    ``identity``: held at these values (K_id,), only pose and expressions fitted (no identity track kept).
    ``identity_mean``: the identity prior's centre (K_id,); by default (``settings.landmark_identity``) where
    :mod:`facenormals.landmark_identity` puts it — for a still, its still share of the way — else the mean face.
    ``expression_map``: centres the expression ridge (default, with ``settings.landmark_expression``: the shipped
    :mod:`facenormals.landmark_expression` map; without: the neutral face)."""
    if expression_map is None and settings.landmark_expression:
        expression_map = load_landmark_expression()
    with _BLAS.limit(limits=1, user_api="blas"):
        return _fit(points, face if face is not None else load_ict_face(), settings, previous, identity,
                    identity_mean, expression_map)


def _fit(points: np.ndarray, face: IctFace, settings: FitSettings, previous: IctFit | None,
         held: np.ndarray | None, mean: np.ndarray | None = None,
         expressions: LandmarkExpression | None = None) -> IctFit:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) < NUM_FIT_POINTS:
        raise ValueError(f"expected landmark crop points of shape (468 or 478, 3), got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError("landmark crop points contain NaN or infinite values")
    target = points[:NUM_FIT_POINTS]
    tracked = previous is not None and settings.track_identity and held is None
    design = _design(face, settings, tracked)
    fade = (0, 0.0)
    track, identity = None, None if held is None else np.asarray(held, dtype=np.float64)
    if previous is not None:
        coeffs = np.concatenate([previous.identity, previous.expression]).astype(np.float64)
        iterations = settings.warm_iterations
        fade = far_side_fade(previous.rotation, settings)
    else:
        coeffs = np.zeros(len(design.prior))
        iterations = settings.iterations
    if identity is not None:
        if identity.shape != (design.k_id,):
            raise ValueError(f"a held identity has {design.k_id} weights, got shape {identity.shape}")
        coeffs[:design.k_id] = identity
    centred_identity = mean is None and held is None and settings.landmark_identity
    features = None
    if centred_identity or expressions is not None:
        # both maps read the same aligned points, once per frame (None: points unlike MediaPipe's)
        identities = load_landmark_identity()
        features = identities.features(target)
    if centred_identity:
        # one view's estimate is noisy on a real face: a track pools it whole, a still takes the share that real
        # video measured (README "Coarse face"); None: the mean face
        mean = identities.centre(features, tracked)
    if mean is not None:
        mean = np.asarray(mean, dtype=np.float64)
        if mean.shape != (design.k_id,):
            raise ValueError(f"an identity prior's centre has {design.k_id} weights, got shape {mean.shape}")
    centre = None if expressions is None or features is None else expressions.from_features(features)
    expression_ridge = None if centre is None else ExpressionRidge(centre, expressions.prior_weight)
    for _ in range(iterations):
        shape = design.mean + (coeffs @ design.flat).reshape(-1, 3)
        scale, rot, trans = weighted_similarity(shape, target, _faded_weights(design, fade))
        fade = far_side_fade(rot, settings)
        normal, rhs = _normal_equations(design, target, scale, rot, trans, settings.depth_weight, fade)
        if tracked and identity is None:  # the frame's evidence once, at its first pose
            evidence = identity_evidence(design, normal, rhs, coeffs[design.k_id:], expression_ridge)
            # a track starts at a face's second frame: a still (no previous fit) pays nothing for it
            track = (previous.identity_track.added(*evidence, settings.identity_memory_frames, mean)
                     if previous.identity_track is not None else IdentityTrack.start(*evidence, mean))
            identity = track.identity(design.prior[:design.k_id], settings.identity_evidence)
        coeffs = _solve_coefficients(design, normal, rhs, identity, mean, expression_ridge)
    weights = _faded_weights(design, fade)
    shape = design.mean + (coeffs @ design.flat).reshape(-1, 3)
    scale, rot, trans = weighted_similarity(shape, target, weights)
    axis_w = np.array([1.0, 1.0, settings.depth_weight])
    residual = (scale * shape @ rot.T + trans - target) ** 2 * axis_w * weights[:, None]
    rms = float(np.sqrt(residual.sum() / (weights.sum() * axis_w.sum())))
    k_id = design.k_id
    return IctFit(rot, scale, trans, coeffs[:k_id].astype(np.float32), coeffs[k_id:].astype(np.float32), rms, track)


def _faded_weights(design: _Design, fade: tuple[int, float]) -> np.ndarray:
    side, loss = fade
    return design.weights * (1.0 - loss * design.sides[side]) if loss > 0.0 else design.weights


def _normal_equations(design: _Design, target: np.ndarray, scale: float, rot: np.ndarray, trans: np.ndarray,
                      depth_weight: float, fade: tuple[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The landmark residuals' normal equations at a pose, without the prior: (K×K, a fresh array; K).

    The camera-space weights diag(1, 1, w_z) seen from the model are ``I − (1 − w_z)·r₃r₃ᵀ`` (r₃: the camera's
    depth axis in model space), so the normal matrix is the precomputed Σ wᵢAᵢᵀAᵢ minus a rank-N correction
    (and minus the faded share of the far half's precomputed part).
    """
    w = _faded_weights(design, fade)
    residual = ((target - trans) / scale) @ rot - design.mean  # model-space residual, cm
    if depth_weight == 1.0:
        # the default: no depth correction (the K×K×N product below would be multiplied by 0: ~40 % of the fit)
        normal = design.gram - fade[1] * design.side_grams[fade[0]]
        weighted = residual * w[:, None]
    else:
        axis = rot[2]
        depth_rows = design.basis @ axis  # K×N: each mode's motion along the camera's depth axis
        normal = (design.gram - fade[1] * design.side_grams[fade[0]]
                  - (1.0 - depth_weight) * (depth_rows * w) @ depth_rows.T)
        weighted = (residual - (1.0 - depth_weight) * np.outer(residual @ axis, axis)) * w[:, None]
    return normal, design.flat @ weighted.reshape(-1)


@dataclass(frozen=True)
class ExpressionRidge:
    """The expression ridge centred away from the neutral face: ``weight`` · ‖β − ``centre``‖² replaces the
    design's ``expression_prior`` · ‖β‖² (:mod:`facenormals.landmark_expression`)."""

    centre: np.ndarray  # (K_ex,)
    weight: float


def _expression_ridge(design: _Design, ridge: ExpressionRidge | None) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal (K,) of the whole ridge and its pull on the right-hand side (K,), identity part left at 0 (the
    identity's centre is the caller's)."""
    diagonal, pull = design.prior.copy(), np.zeros(len(design.prior))
    if ridge is not None:
        diagonal[design.k_id:] = ridge.weight
        pull[design.k_id:] = ridge.weight * ridge.centre
    return diagonal, pull


def identity_evidence(design: _Design, normal: np.ndarray, rhs: np.ndarray, expression: np.ndarray,
                      ridge: ExpressionRidge | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What one frame's landmarks say about the identity at its pose, for :class:`IdentityTrack`: the Schur
    complement (K_id×K_id) and right-hand side (K_id,) of the fit's normal equations at that pose
    (:func:`_normal_equations`, left unchanged) with the expressions solved out — those ``expression`` holds at a
    bound (0 or 1) kept there, as the fit's active set does, the others free with their ridge (``ridge``'s when
    centred by the expression map; free of the bound, a smile would otherwise take a negative weight to explain a
    face's shape)."""
    k = design.k_id
    diagonal, pull = _expression_ridge(design, ridge)
    bound = (expression <= 0.0) | (expression >= 1.0)
    at_bound, free = k + np.flatnonzero(bound), k + np.flatnonzero(~bound)
    rhs = rhs - normal[:, at_bound] @ expression[bound].astype(np.float64) + pull
    block = normal[free[:, None], free]
    block.reshape(-1)[:: len(block) + 1] += diagonal[free]
    cross = normal[:k, free]
    solved = np.linalg.solve(block, np.column_stack([cross.T, rhs[free]]))
    return normal[:k, :k] - cross @ solved[:, :k], rhs[:k] - cross @ solved[:, k]


def _solve_coefficients(design: _Design, normal: np.ndarray, rhs: np.ndarray,
                        identity: np.ndarray | None = None, mean: np.ndarray | None = None,
                        ridge: ExpressionRidge | None = None) -> np.ndarray:
    """Ridge regression of the coefficients on the residuals in crop space (measured in cm), from the normal
    equations at the pose (:func:`_normal_equations`; ``normal`` gets the prior added in place); expressions in
    [0, 1]. ``identity``: held at these values (a tracked face), only the expressions solved; ``mean``: the
    identity ridge's centre (None: the mean face); ``ridge``: the expressions' (None: the neutral face's)."""
    diagonal, pull = _expression_ridge(design, ridge)
    normal.reshape(-1)[:: len(normal) + 1] += diagonal  # the diagonal as a view (np.diag_indices_from: ~4× the time)
    k_id = design.k_id
    rhs = rhs + pull
    if mean is not None and identity is None:
        rhs[:k_id] += design.prior[:k_id] * mean
    active = np.ones(len(rhs), bool)
    coeffs = np.zeros(len(rhs))
    if identity is not None:
        active[:k_id] = False
        coeffs[:k_id] = identity
    for _ in range(3):  # active set: expressions pushed below 0 are fixed at 0, above 1 at 1
        # integer index arrays: the same sub-matrices as np.ix_ on the masks, ~2× faster to gather
        free, fixed = np.flatnonzero(active), np.flatnonzero(~active)
        reduced = rhs[free] - normal[free[:, None], fixed] @ coeffs[fixed]
        coeffs[free] = np.linalg.solve(normal[free[:, None], free], reduced)
        expr = coeffs[k_id:]
        out = (expr < 0.0) | (expr > 1.0)
        if not out.any():
            break
        np.clip(expr, 0.0, 1.0, out=expr)
        active[k_id:] &= ~out
    return coeffs
