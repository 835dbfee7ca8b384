"""RGB-D fusion as a stage of the per-frame route: each face's depth refined by its normals, warm-started per track.

:class:`FusionStage` takes a :class:`~facenormals.engine.FrameResult` whose frame carries depth and intrinsics,
refines every face's depth in crop space (:mod:`facenormals.fusion`: all faces of the frame in one batched solve)
and stores a :class:`FrameFusion` on ``result.fusion``. The API runs it on independent images (``warm=False``); the
realtime loop runs it on the infer thread after the temporal filter (``Pipeline(..., fusion=...)``), where its
memory is keyed by the face's **track id**: the previous frame's refined depth (moved into the new crop) starts the
solver, its measurement history (sequence mode: the earlier frames' depth, outlier-free, averaged in where it agrees
with the new frame; ``FusionConfig.history_weight``) joins the new measurement, and the normals' bias rotation is
reused for :data:`REFRESH_BIAS_EVERY` frames. Views
only draw ``result.fusion``. Problems are reported, not raised: a frame without usable depth gets
``FrameFusion.problem``, a face with too little valid depth a note and ``None`` in ``faces``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from facenormals import fusion, fusion_cg
from facenormals.camera import Intrinsics
from facenormals.depth import DepthError, check_matches, depth_to_metres
from facenormals.runtime.machine import no_nvidia_driver

# Frames between measurements of the rotation field that carries the depth's coarse shape into the normals: it drifts
# slowly, but it is what the measurement history improves (a still sphere in sensor noise, tests/test_fusion.py: 2.50°
# → 1.87° after 12 frames re-measured every 3rd frame, as every frame; every 10th: 1.99° at frame 12 only), and
# re-measuring is half of the preparation's cost.
REFRESH_BIAS_EVERY = 3


def default_device() -> str:
    """The solver's device: CUDA when torch sees one (one batched CG for all faces), else the CPU."""
    if no_nvidia_driver():
        return "cpu"  # known without importing torch (~3 s)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class FusedFace:
    """One face's refined depth in its crop (S×S, metres, NaN outside ``region``), the normals of that depth (S×S×3,
    0 outside), the frame → crop matrix it lives in, and what the solver did (``note``)."""

    depth_m: np.ndarray
    normals: np.ndarray
    region: np.ndarray
    matrix: np.ndarray
    note: str
    iterations: int = 0
    seconds: float = 0.0  # the solve's wall time per face


@dataclass
class FrameFusion:
    """The fusion of one frame: its depth in metres (aligned to the colour image) and one entry per face of the
    :class:`FrameResult` (None where that face's depth was unusable, with the reason in ``notes``). ``problem``: why
    nothing was fused (no depth, no intrinsics, unusable or unaligned depth); ``depth_m`` is then None."""

    depth_m: np.ndarray | None
    intrinsics: Intrinsics | None
    faces: list[FusedFace | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line per face, for display
    failed: dict[int, str] = field(default_factory=dict)  # face index → why it has no refined depth
    problem: str | None = None


@dataclass
class _Track:
    depth_m: np.ndarray
    matrix: np.ndarray
    rotation: np.ndarray | None = None
    age: int = 0  # frames the rotation has been reused
    measurement: np.ndarray | None = None  # the depth history the last solve used (sequence mode)


def frame_depth(frame) -> tuple[np.ndarray | None, str | None]:
    """(the frame's depth in metres, None) or (None, why it cannot be fused)."""
    if frame.depth is None or frame.intrinsics is None:
        return None, "no depth: use an RGB-D source (e.g. --source realsense:FILE)"
    try:
        depth = depth_to_metres(frame.depth, frame.depth_scale_m)
        check_matches(depth, frame.intrinsics, "depth")
    except DepthError as err:
        return None, f"depth unusable: {err}"
    if depth.shape != frame.rgb.shape[:2]:
        return None, "depth is not aligned to the colour image"
    return depth, None


class FusionStage:
    """``result → result`` with ``result.fusion`` set (see the module docstring).

    ``warm``: keep each track's refined depth and bias rotation for the next frame (video); off for independent
    images. ``device``: the solver's (default :func:`default_device`). ``max_tracks``: tracks remembered.
    """

    def __init__(self, config: fusion.FusionConfig | None = None, device: str | None = None, warm: bool = True,
                 max_tracks: int = 16) -> None:
        self.config = config or fusion.FusionConfig()
        self.device = device or default_device()
        self.warm = warm
        self.max_tracks = max_tracks
        self.tracks: dict[int, _Track] = {}
        if not str(self.device).startswith("cuda"):
            fusion_cg.compile_kernels()  # not on the first face of a live run

    def __call__(self, result) -> object:
        t0 = time.perf_counter()
        depth, problem = frame_depth(result.frame)
        if depth is None:
            result.fusion = FrameFusion(None, None, problem=problem)
        else:
            faces = result.face_inputs()
            result.fusion = self.fuse(depth, result.frame.intrinsics, faces)
        result.frame.timings["fuse"] = (time.perf_counter() - t0) * 1000.0
        return result

    def fuse(self, depth_m: np.ndarray, intrinsics: Intrinsics,
             faces: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]) -> FrameFusion:
        """``faces``: (track id, 2×3 frame → crop matrix, S×S×3 crop normals, S×S crop mask) per face."""
        out = FrameFusion(depth_m, intrinsics, [None] * len(faces))
        prepared, kept = [], []
        for index, (track_id, matrix, normals, mask) in enumerate(faces):
            size = normals.shape[0]
            track = self.tracks.get(track_id) if self.warm else None
            init = rotation = previous = None
            if track is not None:
                init = fusion.warp_crop(track.depth_m, track.matrix, matrix)
                if track.measurement is not None:
                    previous = fusion.warp_crop(track.measurement, track.matrix, matrix)
                if track.rotation is not None and track.age < REFRESH_BIAS_EVERY:
                    rotation = fusion.warp_crop(track.rotation, track.matrix, matrix)
            # the aligned depth has one measurement per frame pixel: that is matrix[0, 0] crop pixels wide
            config = dataclasses.replace(self.config,
                                         depth_pixel_px=max(self.config.depth_pixel_px, float(matrix[0][0])))
            try:
                crop = fusion.prepare(fusion.crop_depth(depth_m, matrix, size), normals, mask,
                                      fusion.crop_intrinsics(intrinsics, matrix, size), config, init=init,
                                      rotation=rotation, previous=previous)
            except DepthError as err:
                out.notes.append(f"face {index}: {err}")
                out.failed[index] = str(err)
                self.tracks.pop(track_id, None)
                continue
            prepared.append(crop)
            kept.append((index, track_id, np.asarray(matrix, np.float64), rotation is not None))
        # all faces in one solve: a batched CG (on CUDA when there is one)
        for (index, track_id, matrix, reused), solved in zip(kept, fusion.fuse_many(prepared, self.config, self.device),
                                                              strict=True):
            note = f"face {index}: {solved.solver} {solved.iterations} it, {solved.seconds * 1000:.0f} ms"
            out.faces[index] = FusedFace(solved.depth_m, solved.normals, solved.region, matrix, note, solved.iterations,
                                         solved.seconds)
            out.notes.append(note)
            if self.warm:
                self.remember(track_id, solved, matrix, reused)
        return out

    def remember(self, track_id: int, solved: fusion.FusionResult, matrix: np.ndarray, reused: bool = False) -> None:
        """Keep a solve as track ``track_id``'s warm start for its next frame (``reused``: its bias rotation was the
        track's previous one, so it ages; otherwise it was just measured)."""
        previous = self.tracks.pop(track_id, None)
        track = _Track(solved.depth_m, matrix, measurement=solved.measurement)
        if solved.bias_rotation is not None:  # re-measured every REFRESH_BIAS_EVERY frames, reused in between
            track.rotation = solved.bias_rotation
            track.age = previous.age + 1 if reused and previous is not None else 0
        self.tracks[track_id] = track
        while len(self.tracks) > self.max_tracks:  # tracks come and go: keep the newest
            self.tracks.pop(next(iter(self.tracks)))
