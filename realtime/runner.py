"""The run builder: one place that opens and owns what a run of the loop needs — the source (``open_run_source``,
``calibrated``), the backend (``open_backend``), the face detector, the post-inference stages (temporal filter,
RGB-D fusion), the renderer and the sinks (``LoopParts``) — for ``facenormals run``, ``facenormals bench`` and the
README screenshot script, and closes them in order.

    backend = open_backend("auto", None)
    with open_run_source("sample") as source, LoopParts.build(source, backend, view="normals") as parts:
        report = parts.pipeline(source, max_frames=100).run()

What differs between the callers is options, not wiring: ``run`` adds sinks and a window, ``bench`` one-slot queues
and probes, the screenshot a grab of one frame.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facenormals.faces import Detector, create_detector
from facenormals.realtime.pipeline import Pipeline
from facenormals.realtime.render import FrameRenderer, RenderState, get_view, view_needs_fusion

SAMPLE_KINDS = ("sample", "sample-rgbd")


def open_run_source(spec: str | None, sample_frames: int | None = None) -> Any:
    """The run's frames: ``spec`` (``webcam[:N]``, ``video:PATH``, ``sample``, ...) or, with none, the webcam if one
    opens, else the embedded sample (no download). ``sample_frames`` bounds the embedded clip (``--frames``)."""
    from facenormals.realtime.sources.base import SourceError, open_source, parse_spec

    frames = {"frames": sample_frames} if sample_frames else {}
    if spec:
        return open_source(spec, **(frames if parse_spec(spec).kind in SAMPLE_KINDS else {}))
    try:
        return open_source("webcam")
    except (SourceError, ImportError) as err:
        print(f"facenormals run: no webcam ({err}); using the embedded sample clip", file=sys.stderr)
        return open_source("sample", **frames)


def calibrated(source: Any, calibration: Any) -> Any:
    """``source`` seen through a calibration file (distortion removed, its intrinsics and depth scale); the source is
    closed when the calibration does not fit it."""
    from facenormals.realtime.sources.base import SourceError
    from facenormals.realtime.sources.calibrated import CalibratedSource

    if calibration is None:
        return source
    try:
        return CalibratedSource(source, calibration)
    except SourceError:
        source.close()
        raise


def open_backend(name: str, model: str | Path | None, threads: int | None = None, warm_runs: int = 2,
                 quiet: bool = True) -> Any:
    """The inference backend (``facenormals.export.prepare.create_backend``: a checkpoint is exported once for ONNX
    Runtime), warmed up so first-call costs are not in the figures; ``quiet=False`` says what runs on stderr.
    No ``model`` (or ``auto``): the live loop's default (``facenormals.zoo.LIVE_PREFERENCE``)."""
    from facenormals.export.prepare import create_backend
    from facenormals.runtime.backends import warm_up
    from facenormals.zoo import resolve_model

    model = resolve_model(None if model is None else str(model), live=True)
    backend = create_backend(name, model, **({"threads": threads} if threads else {}))
    warm_up(backend, runs=warm_runs)
    if not quiet:
        precision = getattr(backend, "metadata", {}).get("precision", "fp32")
        print(f"facenormals run: backend {backend.name} ({precision}) on {', '.join(backend.providers)}",
              file=sys.stderr)
    return backend


@dataclass
class LoopParts:
    """Everything one run of :class:`~facenormals.realtime.pipeline.Pipeline` uses besides the frames; a context
    manager that closes the detector (the pipeline closes the sinks; the source stays the caller's)."""

    backend: Any
    detector: Detector
    state: RenderState
    renderer: FrameRenderer
    temporal: Any = None
    fusion: Any = None
    sinks: list = field(default_factory=list)
    opencv_threads: int | None = None  # OpenCV's thread count before the loop, restored by close()
    reuse: Any = None  # the motion-adaptive inference rate (facenormals.reuse.ReusePolicy), None: every frame

    @classmethod
    def build(cls, source: Any, backend: Any, *, view: str = "normals", max_faces: int = 1,
              task_file: Path | None = None, smooth: bool = True, temporal: bool = True, flow: bool = True,
              state: RenderState | None = None, sinks: list | None = None,
              infer_every: int | None = None, steady: bool = True) -> LoopParts:
        """The loop's parts for ``source``: unrelated stills (an image folder) are detected one by one without
        smoothing, tracking or the temporal filter (tracking would carry faces across photos); a view that draws
        refined depth gets the fusion stage. ``flow``: the landmark smoother follows each face's image motion
        (:mod:`facenormals.face_motion`; only with ``smooth``). ``infer_every``: a face is inferred at least every
        that many frames, reusing the last inference in between while it barely moves (:mod:`facenormals.reuse`);
        None (``--infer-every auto``): :func:`default_infer_every` for the normals view and this source as it is
        (a camera reuses; a file read frame by frame does not — a caller that paces one like a camera passes it).
        ``steady``: light-steadied face-mesh landmarks (:class:`facenormals.faces.FaceMesh`; video detector)."""
        from facenormals.reuse import ReusePolicy
        from facenormals.temporal import TemporalFilter

        get_view(view)  # an unavailable view fails before the detector is built
        still = bool(getattr(source, "still_images", False))
        detector = create_detector(max_faces, task_file=task_file, smooth=smooth and not still,
                                   still=still and task_file is None, flow=flow, steady=steady)
        fusion = None
        if view_needs_fusion(view):
            from facenormals.fusion_stage import FusionStage

            fusion = FusionStage(warm=not still)
        state = state or RenderState(view=view)
        every = (default_infer_every(still, view, live=bool(getattr(source, "live", False))) if infer_every is None
                 else infer_every)
        if still:
            every = 1  # reuse follows a face from frame to frame: unrelated stills have none
        # (unsmoothed landmarks keep ids by order: a swap of two faces moves every landmark, so they are inferred)
        parts = cls(backend, detector, state, FrameRenderer(state, backend.name),
                    TemporalFilter() if temporal and not still else None, fusion, list(sinks or []),
                    opencv_threads=_single_threaded_opencv(),
                    reuse=ReusePolicy(every=every) if every > 1 else None)
        _freeze_setup_objects()
        return parts

    def pipeline(self, frames: Any, **options: Any) -> Pipeline:
        """The threaded loop over ``frames`` with these parts; ``options`` are :class:`Pipeline`'s keywords."""
        return Pipeline(frames, self.detector, options.pop("backend", self.backend), self.renderer, self.sinks,
                        temporal=self.temporal, fusion=self.fusion, reuse=self.reuse, **options)

    def close(self) -> None:
        import gc

        gc.unfreeze()  # what build froze is collectable again: a process that builds loops one after another
        self.detector.close()
        if self.opencv_threads is not None:
            import cv2

            cv2.setNumThreads(self.opencv_threads)
            self.opencv_threads = None

    def __enter__(self) -> LoopParts:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


FIT_VIEWS = ("fit", "3d")  # views that draw each frame's ICT fit, made only on frames that are inferred
# --infer-every auto on video: 3 meets ≤ 30 CPU ms a frame on the sample (2 does not: ~34 ms) for +0.02° of deviation
# from the temporal median there (README "Realtime": its measured cost and gain)
AUTO_INFER_EVERY = 3


def default_infer_every(still: bool, view: str, needs_fits: bool = False, live: bool = True) -> int:
    """``--infer-every auto``: reuse (every ``AUTO_INFER_EVERY`` frames at least) in a ``live`` loop — a camera, or
    a file replayed at its frame rate —, unless the view or a sink wants an ICT fit on every frame; 1 (every frame)
    for ``still`` images and for files processed frame by frame (offline, where the best output beats the CPU)."""
    if still or not live or view in FIT_VIEWS or needs_fits:
        return 1
    return AUTO_INFER_EVERY


def inference_threads(backend: str, threads: int | None, infer_every: int) -> int | None:
    """CPU intra-op threads for the backend: ``--threads`` when given; else one for ONNX Runtime on the CPU
    (``auto``, ``ort-cpu``) when the loop reuses inferences, None (physical cores) otherwise. Why: the network then
    runs on one frame in two or three, so a second thread no longer buys frame rate; in the loop it only spends CPU
    (−3 to −5 ms a frame on the sample with the same FPS, README "Realtime"). Torch keeps its default."""
    if threads:
        return threads
    return 1 if infer_every > 1 and backend in ("auto", "ort-cpu") else None


def _freeze_setup_objects() -> None:
    """Move everything allocated so far (modules, the backend, MediaPipe, numba, the ICT model) out of the garbage
    collector's reach (``gc.freeze``). Why: a full collection otherwise walks all of it once every few hundred frames
    and holds the GIL for 160–250 ms, stalling every stage (one such stall in each 330-frame `bench` run on the
    sample, 5 frames dropped; none with it frozen). The loop's own per-frame garbage is still collected."""
    import gc

    gc.collect()
    gc.freeze()


def _single_threaded_opencv() -> int:
    """OpenCV on the calling thread only, for the loop's lifetime; returns the previous thread count.

    The loop's stages already run on their own threads (plus the backend's and MediaPipe's); OpenCV's worker pool on
    top only adds wake-ups on 256² crops and 640×480 frames: −3 ms of CPU per frame on the sample with bit-identical
    crops, priors and pasted normals (README "Realtime").
    """
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    return previous
