"""The three-line Python API: face normals (and, with depth, refined depth) for images in memory or on disk.

    from facenormals import FaceNormals
    fn = FaceNormals()                       # shipped default model, fastest backend that runs here
    faces = fn("photo.jpg")                  # or an RGB uint8 H×W×3 array; a list of either → a list of lists

Each face is a :class:`FaceResult`: normals pasted into the frame (H×W×3, unit inside the mask, NaN
outside), the frame mask, the crop square, the landmarks, and the crop-space normals the network
produced. All faces of all images go through the network as one batch.

Conventions: images are RGB (never BGR); normals are camera space, +x right, +y up, +z toward the
camera (``facenormals.conventions``); landmarks are pixels (x, y) with the origin at the centre of the
top-left pixel (``facenormals.geometry``); depth is metres, NaN where missing.

Detection uses the project's one face mesh (:class:`facenormals.faces.FaceMesh`) in still-image mode (each
image on its own, no tracking between calls), with the same landmark convention and
:class:`facenormals.faces.Face` type as the realtime loop; pass
``detector=facenormals.faces.create_detector(...)`` for video frames, where tracking and smoothing help.

A face the face mesh misses (a profile) is still returned from the face detection alone, with
``FaceResult.source == "detector"`` (box and mask from the detection's 6 keypoints, estimated landmarks, no
ICT ``fit``; README "Faces the mesh misses"); ``StillFaceDetector(fallback=False)`` drops such faces.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from facenormals.camera import intrinsics_from_matrix
from facenormals.depth import MAX_DEPTH_M, check_matches, depth_to_metres, implausible_depth
from facenormals.engine import FaceResult, FrameEngine
from facenormals.faces import StillFaceDetector, check_frame
from facenormals.frame import Frame
from facenormals.fusion_stage import FusionStage
from facenormals.geometry import invert_affine
from facenormals.ict_fit import IctFit

ImageInput = np.ndarray | str | Path
__all__ = ["FaceNormals", "FaceResult", "ImageError", "load_image"]


# ------------------------------------------------------------------------------------------------ inputs


def load_image(image: ImageInput) -> np.ndarray:
    """A path or an array → RGB uint8 H×W×3; anything else is a ValueError naming what was given.

    Grey uint8 images (H×W or H×W×1: infrared cameras, ``cv2.IMREAD_GRAYSCALE``) are repeated into three channels
    and RGBA (PNG loads) loses its alpha (:func:`facenormals.fileio.three_channels`, as for files of either kind).
    """
    from facenormals.fileio import read_rgb, three_channels

    if isinstance(image, (str, Path)):
        return read_rgb(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an RGB uint8 array or an image path, got {type(image).__name__}")
    channels = image.shape[2] if image.ndim == 3 else 1 if image.ndim == 2 else 0
    if image.dtype != np.uint8 or channels not in (1, 3, 4):
        hint = " (float image? pass np.uint8 RGB in 0..255)" if np.issubdtype(image.dtype, np.floating) else ""
        raise ValueError(f"expected an RGB uint8 H×W×3 image (or grey H×W, RGBA H×W×4), got {image.dtype} "
                         f"{image.shape}{hint}")
    return three_channels(image)


class ImageError(ValueError):
    """One image of a list that could not be used: ``index`` in the list and the reason (``__cause__``)."""

    def __init__(self, index: int, image: object, cause: BaseException) -> None:
        super().__init__(f"image {index} ({_describe(image)}): {cause}")
        self.index = index


def _describe(image: object) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, np.ndarray):
        return f"array {image.dtype} {image.shape}"
    return type(image).__name__


def _item_error(index: int, image: object, cause: BaseException) -> ImageError:
    error = ImageError(index, image, cause)
    error.__cause__ = cause
    warnings.warn(str(error), RuntimeWarning, stacklevel=4)
    return error


def load_batch(batch: list, single: bool) -> tuple[list[np.ndarray | None], list]:
    """(each image as RGB uint8, None where it is unusable; results with an :class:`ImageError` in those slots).
    A single image raises instead: there is nothing else to keep."""
    frames: list[np.ndarray | None] = []
    results: list = []
    for i, image in enumerate(batch):
        try:
            frames.append(check_frame(load_image(image)))
            results.append([])
        except (ValueError, TypeError, OSError) as err:
            if single:
                raise
            frames.append(None)
            results.append(_item_error(i, image, err))
    return frames, results


def _is_one_camera(intrinsics: object) -> bool:
    return intrinsics is None or not isinstance(intrinsics, (list, tuple)) or np.asarray(intrinsics).shape == (3, 3)


def _per_image(value: object, count: int, shared: bool, what: str) -> list:
    """One value per image: a single value is shared by all images, a list must have one per image."""
    if value is None:
        return [None] * count
    if shared:
        return [value] * count
    if isinstance(value, np.ndarray) and value.ndim == 2:
        raise ValueError(f"got {count} images but one array of {what}: pass a list, one per image")
    values = list(value)  # type: ignore[call-overload]
    if len(values) != count:
        raise ValueError(f"got {count} images but {len(values)} {what}")
    return values




# ---------------------------------------------------------------------------------------------- the API


class FaceNormals:
    """Faces → normals (and refined depth). ``FaceNormals(model=None, backend="auto", max_faces=4)``.

    ``model``: a checkpoint (``.safetensors``, e.g. from ``convert-official``), an ``.onnx`` or a TensorRT
    ``.engine``; None = the shipped default. ``backend``: a name of ``facenormals.runtime.backends``
    (``auto`` picks the fastest one that runs here). The runtime runs files and never builds them: ONNX Runtime
    on a checkpoint needs ``prepare=facenormals.export.prepare.onnx_for`` (export once, cached) or an ``.onnx``;
    ``auto`` without it runs a checkpoint on torch (a shipped model on its INT8 twin). ``detector``: anything with
    ``detect(rgb, t_ns) -> list[Face]``; default: :class:`facenormals.faces.StillFaceDetector` (face
    detection, then the mesh per face; every image on its own, no smoothing). ``mirror`` (default): each face's
    normals are averaged with the network's on its mirror image (:mod:`facenormals.mirror_average`: a little more
    accurate and steadier under changing light, at twice the network's cost); ``mirror=False`` for speed.
    """

    def __init__(self, model: str | Path | None = None, backend: str = "auto", max_faces: int = 4,
                 detector: object | None = None, mirror: bool = True, **backend_options: object) -> None:
        from facenormals.runtime.backends import create_backend

        self.backend = create_backend(backend, model, **backend_options)
        self.input_size = int(self.backend.input_size)
        if self.backend.in_chans not in (3, 7):
            raise ValueError(f"{model}: the model takes {self.backend.in_chans} input channels; this API feeds "
                             "RGB (3) or RGB + a coarse-face prior (7)")
        self.prior_source = self.backend.prior_source  # None for RGB models (facenormals.prior)
        self.uses_prior = self.prior_source is not None
        # face detection, then the mesh per face: every face of a group photo, small ones included (issue 17)
        self.detector = detector if detector is not None else StillFaceDetector(max_faces)
        # independent images: no ICT warm start from whichever face had the same index in the previous call
        self.engine = FrameEngine(self.backend, self.detector, self.input_size, warm_start=False, mirror=mirror)
        self._fusion: FusionStage | None = None  # made on the first image with depth (fusion_stage)

    @property
    def fusion(self) -> FusionStage:
        """RGB-D: the same fusion stage as the live loop, no memory across images (made when first needed)."""
        if self._fusion is None:
            self._fusion = FusionStage(warm=False)
        return self._fusion

    def __enter__(self) -> FaceNormals:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.detector.close()

    def __call__(self, images: ImageInput | Sequence[ImageInput], depth: object = None, intrinsics: object = None,
                 depth_scale_m: float | None = 0.001) -> list[FaceResult] | list[list[FaceResult]]:
        """One image → its faces; a list (or an N×H×W×3 array) of images → one list of faces per image.

        In a list, an image that cannot be used (None, a missing or broken file, a 0×0 array, bad depth) gets an
        :class:`ImageError` naming its index in its slot, with a warning; the other images' faces are kept.

        ``depth`` (with ``intrinsics``, an ``Intrinsics`` or 3×3 matrix of the RGB image): depth aligned to
        the RGB image, uint16 in units of ``depth_scale_m`` metres (default millimetres) or float metres;
        a list of them for a list of images. Adds the refined depth of each face (``facenormals.fusion``).
        ``intrinsics`` alone are kept on each face (``FaceResult.intrinsics``): ``face.mesh()`` is then metric
        in the camera frame (the head's distance from the focal length) instead of weak perspective.
        """
        # an array of 2 or 3 dimensions is one image (grey H×W, H×W×C), of 4 a stack of images
        single = isinstance(images, (str, Path)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        batch = [images] if single else list(images)
        depths = _per_image(depth, len(batch), single, "depth maps")
        cameras = _per_image(intrinsics, len(batch), single or _is_one_camera(intrinsics), "intrinsics")
        if any(d is not None and k is None for d, k in zip(depths, cameras, strict=True)):
            raise ValueError("depth needs the intrinsics of the RGB image it is aligned to (intrinsics=...)")
        frames, results = load_batch(batch, single)
        good = [i for i, frame in enumerate(frames) if frame is not None]
        for i, faces in zip(good, self._infer([frames[i] for i in good]), strict=True):
            results[i] = faces
        for i in good:
            if cameras[i] is not None and results[i]:  # FaceResult.mesh() is then metric in the camera frame
                camera = intrinsics_from_matrix(cameras[i], frames[i].shape[:2])
                results[i] = [replace(face, intrinsics=camera) for face in results[i]]
            if depths[i] is None or not results[i]:
                continue
            try:
                results[i] = fuse_faces(results[i], depths[i], intrinsics_from_matrix(cameras[i], frames[i].shape[:2]),
                                        depth_scale_m, frames[i].shape[:2], self.fusion)
            except ValueError as err:  # this image's depth is bad: the others keep theirs
                if single:
                    raise
                results[i] = _item_error(i, batch[i], err)
        return results[0] if single else results

    def _infer(self, images: list[np.ndarray]) -> list[list[FaceResult]]:
        """All faces of all images through the one per-frame engine, as one inference."""
        frames = [Frame(i, time.monotonic_ns(), rgb) for i, rgb in enumerate(images)]
        return [with_fits(result) for result in self.engine.process_many(frames)]


def with_fits(result) -> list[FaceResult]:
    """The frame's :class:`FaceResult` list, each with its ICT fit: the model's own (ict-fit, ict-blend priors) or one
    fitted to the landmarks and MediaPipe's depth when first read (``fit``, :meth:`FaceResult.mesh`; ~2–3 ms a
    face, which a caller that wants only normals does not pay)."""
    faces = result.face_results()
    for i, (face, detected) in enumerate(zip(faces, result.faces, strict=False)):
        if face.fit is None and detected.depth is not None:
            faces[i] = replace(face, fit=partial(_fit_face, detected.landmarks, detected.depth, face.crop_matrix))
    return faces


def _fit_face(landmarks: np.ndarray, depth: np.ndarray, crop_matrix: np.ndarray) -> IctFit:
    from facenormals.ict_fit import fit_landmarks
    from facenormals.mesh_prior import crop_points_from_pixels

    return fit_landmarks(crop_points_from_pixels(landmarks, depth, crop_matrix))


# --------------------------------------------------------------------------------------------- RGB-D


def fuse_faces(faces: list[FaceResult], depth: np.ndarray, intrinsics, depth_scale_m: float | None,
               frame_shape: tuple[int, int], stage: FusionStage | None = None) -> list[FaceResult]:
    """Refine each face's depth with its normals (the one fusion stage, :mod:`facenormals.fusion_stage`, in crop
    space), then paste it back. Bad depth for the whole image raises; a face with too little depth warns; readings
    no sensor reports (saturated, beyond :data:`~facenormals.depth.MAX_DEPTH_M`) are missing, with a warning."""
    bad = int(implausible_depth(depth, depth_scale_m).sum()) if np.ndim(depth) == 2 else 0
    if bad:
        warnings.warn(f"depth: {bad} readings saturated or beyond {MAX_DEPTH_M:.0f} m are treated as missing",
                      RuntimeWarning, stacklevel=3)
    metres = depth_to_metres(depth, depth_scale_m)
    check_matches(metres, intrinsics)
    if metres.shape != frame_shape:
        raise ValueError(f"depth is {metres.shape[1]}×{metres.shape[0]} but the image is "
                         f"{frame_shape[1]}×{frame_shape[0]}: align depth to the colour image first")
    stage = stage or FusionStage(warm=False)
    fused = stage.fuse(metres, intrinsics, [(i, face.crop_matrix, face.crop_normals, face.crop_mask)
                                            for i, face in enumerate(faces)])
    for i, reason in fused.failed.items():  # this face is out of the sensor's range: keep its normals, no depth
        warnings.warn(f"face {i}: no refined depth ({reason})", RuntimeWarning, stacklevel=3)
    out = list(faces)
    for i, result in enumerate(fused.faces):
        if result is not None:
            out[i] = replace(faces[i], crop_depth=result.depth_m,
                             depth=paste_depth(result.depth_m, faces[i].crop_matrix, frame_shape))
    return out


def paste_depth(crop_depth_m: np.ndarray, matrix: np.ndarray, frame_shape: tuple[int, int]) -> np.ndarray:
    """Crop-space depth (metres, NaN outside) → the frame; bilinear among valid pixels, NaN elsewhere."""
    height, width = frame_shape
    valid = np.isfinite(crop_depth_m)
    inverse = invert_affine(matrix)
    warp = {"dsize": (width, height), "flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_CONSTANT, "borderValue": 0}
    num = cv2.warpAffine(np.where(valid, crop_depth_m, 0.0).astype(np.float32), inverse, **warp)
    den = cv2.warpAffine(valid.astype(np.float32), inverse, **warp)
    out = np.full((height, width), np.nan, dtype=np.float32)
    ok = den > 0.5
    out[ok] = num[ok] / den[ok]
    return out
