"""One frame, one path: detect → crop → infer (a batch of faces) → paste, synchronously, for every caller.

:class:`FrameEngine` is the project's only per-frame route. The API (``FaceNormals``) runs it over a list of images
(all faces of all images in one inference); the realtime :class:`~facenormals.realtime.pipeline.Pipeline` runs its
stages on threads (``detect_and_crop`` on the detect thread, ``infer`` on the infer thread, ``paste`` on the main
thread); the benchmarks, INT8 calibration and parity take their crops from the same face mesh and
:func:`facenormals.geometry.face_crop`. Each stage adds its milliseconds to ``frame.timings``.

Whether the network wants a coarse-face prior (and which) is decided once, from the model's own metadata
(``backend.prior_source``, :mod:`facenormals.prior`), never from its channel count.

The results type is :class:`FrameResult` (one frame: its faces, crops, the network's crop-space normals and the
normals pasted into the frame); :meth:`FrameResult.face_results` gives the API's per-face :class:`FaceResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from facenormals.camera import Intrinsics
from facenormals.crops import CropBatcher, FaceBatch, PastedNormals, paste_face
from facenormals.faces import Detector, Face
from facenormals.frame import Frame
from facenormals.geometry import Crop, SquareBox
from facenormals.ict_fit import IctFit
from facenormals.mirror_average import mirror_averaged
from facenormals.reuse import DEFERRED, KeyframeStore, ReusePolicy, ReuseSchedule

if TYPE_CHECKING:  # the fusion stage (torch) is imported only by callers that fuse
    from facenormals.fusion_stage import FrameFusion

Backend = Callable[[np.ndarray], np.ndarray]  # N×C×S×S float32 → N×3×S×S unit normals (facenormals.runtime)


class _PendingFit:
    """``FaceResult.fit``: an :class:`IctFit`, None, or a callable that fits one, called on first access and cached.

    A model without an ict-fit prior has no fit of its own; the API fits one to the landmarks only when a caller reads
    ``fit`` (head pose, :meth:`FaceResult.mesh`), not on every image (~2–3 ms of CPU a face). A data descriptor,
    so the frozen dataclass's ``__init__`` and ``dataclasses.replace`` store through it.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> IctFit | None:
        if obj is None:
            return None  # the field's default
        value = obj.__dict__.get(self._slot)
        if callable(value):
            value = value()
            obj.__dict__[self._slot] = value
        return value

    def __set__(self, obj: object, value: IctFit | Callable[[], IctFit] | None) -> None:
        obj.__dict__[self._slot] = value

    @staticmethod
    def pending(obj: object) -> bool:
        """True while ``obj.fit`` is a fit not yet computed."""
        return callable(obj.__dict__.get("_fit"))


@dataclass(frozen=True)
class FaceResult:
    """One face of one image. Frame-sized arrays are H×W of the input image; crop arrays S×S (S = model input)."""

    normals: np.ndarray        # float32 H×W×3, unit inside ``mask``, NaN outside
    mask: np.ndarray           # bool H×W: the face's landmark hull, where ``normals`` is valid
    box: SquareBox             # the crop square in frame pixels (the paper's 1.2× landmark square; a detector face's
    #                            from its detection box, ``source``)
    landmarks: np.ndarray      # float32 (478, 2) face-mesh landmarks, frame pixels (x, y); estimated: see ``source``
    crop_normals: np.ndarray   # float32 S×S×3 unit normals of the whole crop, as the network gave them
    crop_mask: np.ndarray      # bool S×S landmark hull in the crop
    crop_matrix: np.ndarray    # 2×3 affine, frame pixels → crop pixels
    depth: np.ndarray | None = None       # float32 H×W refined depth (metres, NaN outside) when depth was given
    #                                       (None with a warning where the face has too little valid depth)
    crop_depth: np.ndarray | None = None  # float32 S×S refined depth in the crop
    fit: IctFit | None = _PendingFit()  # the ICT-FaceKit face fitted to the landmarks: head pose (``fit.euler_deg()``,
    #                                   crop space), identity and expression coefficients; the model's own (ict-fit,
    #                                   ict-blend priors) or, for other models, fitted on first access
    intrinsics: Intrinsics | None = None  # the image's pinhole when the caller gave one (``intrinsics=``)
    source: str = "mesh"  # "mesh": landmarks from the face mesh; "detector": a face the mesh missed (a profile),
    #                       from the face detection alone: box and mask from its 6 keypoints, ``landmarks`` the
    #                       ICT mean face posed on them (estimated), no prior, no ``fit`` (facenormals.keypoint_pose)

    def mesh(self, config: object = None, intrinsics: object = None) -> object:
        """The refined 3-D face (:mod:`facenormals.face3d`): the fitted ICT face's depth refined by this face's
        normals; a ``face3d.Mesh`` in **metres** with vertices, faces, unit vertex normals, ``.to_trimesh()`` and
        ``.save_ply(path)``. Without intrinsics: weak perspective, metric from the ICT model's cm, x right, y up,
        z toward the camera, origin at the crop centre on the fitted head's depth. With ``intrinsics`` (an
        ``Intrinsics`` or 3×3 matrix of the image; default: those given to the API call): the head's distance
        from the focal length, the mesh in the camera frame. ValueError when the face has no fit."""
        from facenormals import face3d  # the fusion solver (torch) only when a mesh is asked for

        return face3d.face_result_mesh(self, face3d.FACE_FUSION if config is None else config, intrinsics)


@dataclass
class FrameResult:
    """Everything known about one frame after inference: what the API returns, views draw and sinks save."""

    frame: Frame
    faces: list[Face]
    crops: tuple[Crop, ...] = ()
    crop_normals: np.ndarray | None = None  # backend output N×3×S×S
    normals: list[PastedNormals] = field(default_factory=list)  # pasted into the frame (faces inside it)
    fits: tuple[IctFit | None, ...] = ()  # per face: the ICT fit of an ict-fit or ict-blend prior model, else None
    pasted: list[PastedNormals | None] = field(default_factory=list)  # per face, None where it is outside the frame
    fusion: FrameFusion | None = None  # refined depth per face, when a FusionStage ran (RGB-D frames)
    reused: tuple[bool, ...] = ()  # per face: its normals are an earlier inference's, carried (facenormals.reuse)

    def face_inputs(self) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Per face: (track id, 2×3 frame → crop matrix, S×S×3 crop normals, S×S crop mask), what fusion needs."""
        if self.crop_normals is None:
            return []
        return [(face.track_id, crop.matrix, np.ascontiguousarray(normals.transpose(1, 2, 0), dtype=np.float32),
                 crop.mask) for face, crop, normals in zip(self.faces, self.crops, self.crop_normals, strict=False)]

    def face_results(self) -> list[FaceResult]:
        """The API's view: one :class:`FaceResult` per face, with frame-sized normals (NaN outside the face)."""
        if self.crop_normals is None:
            return []
        shape = self.frame.rgb.shape[:2]
        results = []
        for i, (face, crop) in enumerate(zip(self.faces, self.crops, strict=False)):
            normals = np.full((*shape, 3), np.nan, dtype=np.float32)
            mask = np.zeros(shape, dtype=bool)
            pasted = self.pasted[i] if i < len(self.pasted) else None
            if pasted is not None:
                rows, cols = pasted.region
                normals[rows, cols] = pasted.normals
                mask[rows, cols] = pasted.valid
            crop_normals = np.ascontiguousarray(self.crop_normals[i].transpose(1, 2, 0), dtype=np.float32)
            fit = self.fits[i] if i < len(self.fits) else None
            results.append(FaceResult(normals, mask, crop.box, face.landmarks, crop_normals, crop.mask, crop.matrix,
                                      fit=fit, source=face.source))
        return results


class DeferredInference:
    """Keyframes whose network run was deferred by :meth:`FrameEngine.infer_deferred`: call it (once, on the
    thread that infers, before that thread's next frame) to make the inputs the detect thread left unmade
    (:data:`facenormals.reuse.DEFERRED`), run the network on them and keep the outputs as their tracks' keyframes.
    ``faces``: how many faces it infers."""

    def __init__(self, engine: FrameEngine, frame_id: int, inputs: np.ndarray,
                 keys: list[tuple[Face, Crop, bool]]) -> None:
        self._engine, self._frame_id, self._inputs, self._keys = engine, frame_id, inputs, keys  # (face, crop, unmade)
        self.faces = len(keys)

    def __call__(self) -> None:
        engine, store = self._engine, self._engine.keyframes
        for row, (face, crop, unmade) in zip(self._inputs, self._keys, strict=True):
            if unmade:
                engine.batcher.fill(row, face, crop)
        normals = engine._run(self._inputs)
        for (face, crop, _), output in zip(self._keys, normals, strict=True):
            store.keep(face.track_id, self._frame_id, output, crop.matrix, face.landmarks)
        engine.counts["inferred"] += self.faces


def _ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class FrameEngine:
    """detect → crop → infer → paste for frames, one synchronous call per stage.

    ``backend``: N×C×S×S → N×3×S×S normals, with ``input_size`` and ``prior_source`` attributes (or pass
    ``input_size``). ``ring``: crop buffers in flight (the threaded pipeline holds a few; one call at a time
    needs 2). ``warm_start``: ICT fits start from the same track's previous fit (video); off for independent images.
    ``reuse``: a tracked face that barely moved since its last inference reuses that output, carried into the new
    crop, instead of being inferred (:mod:`facenormals.reuse`; video only: track ids must follow faces); None or
    ``every=1``: every face of every frame is inferred. ``counts`` holds the faces inferred and reused so far.
    ``mirror``: each face's normals are the mean of the network on its crop and on the crop's mirror image
    (:mod:`facenormals.mirror_average`; twice the network's cost: for still images).
    """

    def __init__(self, backend: Backend, detector: Detector, input_size: int | None = None, ring: int = 2,
                 warm_start: bool = True, reuse: ReusePolicy | None = None, mirror: bool = False) -> None:
        size = input_size or getattr(backend, "input_size", None)
        if not size:
            raise ValueError("input_size unknown: pass it or use a backend with an input_size attribute")
        self.backend = backend
        self.mirror = mirror
        self.detector = detector
        self.input_size = int(size)
        self.prior_source: str | None = getattr(backend, "prior_source", None)  # decided once, from the model
        max_faces = int(getattr(detector, "max_faces", 4))
        self.batcher = CropBatcher(self.input_size, max_faces, ring=ring, prior=self.prior_source,
                                   warm_start=warm_start)
        active = reuse is not None and reuse.active
        self.schedule = ReuseSchedule(reuse) if active else None  # detect thread's half
        self.keyframes = KeyframeStore() if active else None  # infer thread's half
        self.counts = {"inferred": 0, "reused": 0}  # faces, over the engine's life
        # deferred keyframes (the live loop sets it; :meth:`infer_deferred`): a keyframe of a track that has one is
        # neither cropped for the network nor given its prior on the detect thread
        self.defer_keyframes = False

    # -- stages (the threaded pipeline calls these one by one) -----------------------------------------------
    def detect_and_crop(self, frame: Frame) -> tuple[list[Face], FaceBatch]:
        """The frame's faces and their network batch (``FrameError`` for an unusable frame)."""
        t0 = time.perf_counter()
        faces = self.detector.detect(frame.rgb, frame.t_stream_ns)
        t1 = time.perf_counter()
        decide = None
        if self.schedule is not None:
            schedule = self.schedule
            schedule.forget_except({face.track_id for face in faces})

            def decide(face: Face, crop: Crop) -> int | None:
                return schedule.decide(face.track_id, frame.id, face.landmarks, crop.matrix, self.defer_keyframes)

        batch = self.batcher(frame.rgb, faces, decide)
        frame.timings["detect"] = (t1 - t0) * 1000.0
        frame.timings["crop"] = _ms_since(t1)
        return faces[: len(batch.crops)], batch

    def infer(self, frame: Frame, faces: list[Face], batch: FaceBatch) -> FrameResult:
        """The network on all faces of the frame at once (no call when there are none)."""
        return self._infer(frame, faces, batch, defer=False)[0]  # nothing is deferred without ``defer``

    def infer_deferred(self, frame: Frame, faces: list[Face],
                       batch: FaceBatch) -> tuple[FrameResult, DeferredInference | None]:
        """:meth:`infer`, and with :attr:`defer_keyframes` the keyframes of tracks that already have one deferred
        (the live loop's latency): such a face is shown with its previous keyframe's output carried into the new
        crop, as a reused face is, and the returned :class:`DeferredInference` makes its input, runs the network on
        it and keeps the output as the track's keyframe, for the frames after this one. A track's first keyframe is
        inferred now (nothing to carry). None when nothing was deferred."""
        return self._infer(frame, faces, batch, defer=self.defer_keyframes)

    def _infer(self, frame: Frame, faces: list[Face], batch: FaceBatch,
               defer: bool) -> tuple[FrameResult, DeferredInference | None]:
        t0 = time.perf_counter()
        deferred = None
        if not batch.reuse or self.keyframes is None:
            normals = self._run(batch.inputs) if len(batch.crops) else None
            self.counts["inferred"] += len(batch.crops)
            result = FrameResult(frame, faces, batch.crops, normals, fits=batch.fits)
        else:
            result, deferred = self._infer_or_reuse(frame, faces, batch, self.keyframes, defer)
        frame.timings["infer"] = _ms_since(t0)
        return result, deferred

    @staticmethod
    def expects_inference(batch: FaceBatch) -> bool:
        """Whether :meth:`infer` will call the backend for ``batch`` (a face to infer; a fallback may add one)."""
        return bool(batch.crops) and (not batch.reuse or any(key is None or key == DEFERRED for key in batch.reuse))

    def _infer_or_reuse(self, frame: Frame, faces: list[Face], batch: FaceBatch, store: KeyframeStore,
                        defer: bool) -> tuple[FrameResult, DeferredInference | None]:
        """Infer the faces scheduled for it (and any whose keyframe never reached the backend), carry the others'
        keyframe outputs into their crops, keep the new keyframes. ``defer``: a scheduled face whose track has an
        earlier keyframe is carried from it now and inferred by the returned :class:`DeferredInference`."""
        store.forget_except({face.track_id for face in faces})
        fits = list(batch.fits)
        rows, later = [], []
        for i, (face, key) in enumerate(zip(faces, batch.reuse, strict=True)):
            if key is None or key == DEFERRED:
                if defer and store.has_track(face.track_id):
                    later.append(i)  # a DEFERRED row's input is made by the DeferredInference
                    continue
                if key == DEFERRED:  # nothing to carry after all: its input now
                    fits[i] = self.batcher.fill(batch.inputs[i], face, batch.crops[i])
                rows.append(i)
            elif not store.has(face.track_id, key):  # its keyframe was dropped on the way: infer it after all
                fits[i] = self.batcher.fill(batch.inputs[i], face, batch.crops[i])
                rows.append(i)
        size = self.input_size
        normals = np.empty((len(batch.crops), 3, size, size), np.float32)
        if rows:
            inputs = batch.inputs if len(rows) == len(batch.crops) else batch.inputs[rows]
            normals[rows] = self._run(inputs)
        inferred = set(rows)
        for i, (face, crop) in enumerate(zip(faces, batch.crops, strict=True)):
            if i in inferred:
                store.keep(face.track_id, frame.id, normals[i], crop.matrix, face.landmarks)
            else:
                normals[i] = store.carried(face.track_id, crop.matrix, face.landmarks)
        self.counts["inferred"] += len(rows)
        self.counts["reused"] += len(batch.crops) - len(rows) - len(later)
        reused = tuple(i not in inferred for i in range(len(batch.crops)))
        result = FrameResult(frame, faces, batch.crops, normals, fits=tuple(fits), reused=reused)
        if not later:
            return result, None
        keys = [(faces[i], batch.crops[i], batch.reuse[i] == DEFERRED) for i in later]
        return result, DeferredInference(self, frame.id, batch.inputs[later], keys)

    def paste(self, result: FrameResult) -> FrameResult:
        """The crop-space normals back into the frame, each face on its own region."""
        t0 = time.perf_counter()
        if result.crop_normals is not None:
            shape = result.frame.rgb.shape[:2]
            result.pasted = [paste_face(n, crop, shape) for n, crop in zip(result.crop_normals, result.crops, strict=True)]
            result.normals = [p for p in result.pasted if p is not None]
        result.frame.timings["paste"] = _ms_since(t0)
        return result

    # -- whole frames -------------------------------------------------------------------------------------
    def process(self, frame: Frame) -> FrameResult:
        """One frame through every stage."""
        faces, batch = self.detect_and_crop(frame)
        return self.paste(self.infer(frame, faces, batch))

    def process_many(self, frames: Sequence[Frame]) -> list[FrameResult]:
        """Several frames, all their faces in one inference (the API's batch of images)."""
        detected = []
        for frame in frames:
            faces, batch = self.detect_and_crop(frame)
            # the batcher reuses its buffers round-robin: copy before the next frame's crops land in them
            detected.append((frame, faces, FaceBatch(batch.inputs.copy(), batch.crops, batch.fits)))
        inputs = [batch.inputs for _, _, batch in detected if len(batch.crops)]
        normals = self._run(np.concatenate(inputs)) if inputs else np.zeros((0, 3, 1, 1), np.float32)
        results, start = [], 0
        for frame, faces, batch in detected:
            count = len(batch.crops)
            crop_normals = normals[start:start + count] if count else None
            start += count
            results.append(self.paste(FrameResult(frame, faces, batch.crops, crop_normals, fits=batch.fits)))
        return results

    def _run(self, inputs: np.ndarray) -> np.ndarray:
        normals = (mirror_averaged(self.backend) if self.mirror else self.backend)(inputs)
        if len(normals) != len(inputs):
            raise ValueError(f"backend returned {len(normals)} normal maps for {len(inputs)} faces")
        return normals
