"""Real skin on ICT faces: per-vertex colours taken from real photos and video frames.

Why: on the same ICT faces, poses and lights, a real photo texture (the James scan's) instead of the procedural
skin makes MediaPipe's landmarks — and so the coarse face — 1.1° better, and the network's gain over its coarse
face falls from 0.61° to 0.20° (session 24, README "Photo textures"). A network trained only on procedural skin
learns corrections sized for that skin's worse landmarks and reads its shading; real skin (brows, lashes, lips,
stubble, blotches) is what it meets in use.

Per face found in a photo or frame (the project's one MediaPipe wrapper, :class:`facenormals.faces.FaceMesh`):
1. the ICT face is fitted to its landmarks (:func:`facenormals.ict_fit.fit_landmarks`, the coarse face's own fit),
   so every ICT skin vertex has a place in the photo;
2. vertices facing the camera and not hidden (a splatted z-buffer) take the photo's colour there (linear RGB);
3. the photo's own light is divided out at low frequency: a first-order spherical-harmonic shading (ambient +
   one direction) of the fitted normals is fitted to the skin's luminance, robustly, and divided out, so that
   the render's light is the only directional light on the face. What is left is real albedo and detail (and
   whatever shading the fit cannot see: fine wrinkles, the photo's specular highlights).

The bank (``facenormals data textures``) is a small ``.npz`` of those colours on ICT's full topology; the
renderer (``facenormals data render --photo-textures BANK``) dresses a share of its faces in a random one, picking
a source (a photo's face, a video) uniformly first so one long video does not dominate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from facenormals.atomic import atomic_path
from facenormals.fileio import DataError
from facenormals.ict_fit import ASSET, fit_landmarks, load_ict_face
from facenormals.mesh_prior import crop_points_from_pixels, vertex_normals
from facenormals.training.data import albedo, ict
from facenormals.training.data.ict_correspondence import KEPT_REGIONS  # the fit's compact model: face skin, eyeballs

MIN_FACING = 0.35  # a vertex takes the photo's colour only when it faces the camera at least this much (cos)
DEPTH_TOLERANCE = 0.02  # of the face's height in pixels: how far behind the z-buffer a vertex may lie and be seen
MIN_VALID_SHARE = 0.3  # a face whose visible skin is less than this share of ICT's face skin is not kept
EDGE_MARGIN = 0.03  # of the face's height: skin this close to the landmarks' outline is not taken (hair, collar)
OPENING_MARGIN = 0.015  # of the face's height: how far around the eye and mouth openings colours are not taken
# MediaPipe's contours of the eye openings and the inner lips (FACEMESH_LEFT_EYE, _RIGHT_EYE, _LIPS inner ring)
EYE_OPENINGS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
MOUTH_OPENING = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
DELIGHT_RANGE = (0.5, 2.0)  # the photo-light correction's clamp (a ratio of luminance)


@dataclass(frozen=True)
class PhotoTexture:
    """One real face's colours on ICT's full topology (linear RGB, V×3) and which vertices have one."""

    name: str  # source file stem, and the face's index in the frame / the frame number
    group: str  # one person: a photo's face, or a whole video
    colors: np.ndarray
    valid: np.ndarray


def compact_to_full(model: ict.IctModel) -> np.ndarray:
    """Index in ICT's full model of each vertex of the fit's compact model (face skin and eyeballs)."""
    full = np.nonzero(np.isin(model.region, KEPT_REGIONS))[0]
    compact = load_ict_face()
    if len(full) != len(compact.neutral) or not np.allclose(model.neutral[full], compact.neutral, atol=1e-3):
        raise DataError(f"{ASSET}: the compact model's vertices are not ICT's face and eyeball regions in order "
                        "(re-derive it: python -m facenormals.training.data.ict_correspondence)")
    return full


def visible_vertices(points: np.ndarray, normals: np.ndarray, triangles: np.ndarray,
                     min_facing: float = MIN_FACING) -> np.ndarray:
    """Vertices (crop frame: x right, y up, z to the camera) that face the camera and lie on the z-buffer's surface.

    The z-buffer is the mesh's triangles splatted at their centroids and vertices on a grid of ~1 % of the face's
    height: coarse, but the occluders that matter (the nose, the far cheek of a turned head) are large.
    """
    height = float(np.ptp(points[:, 1])) or 1.0
    cell = max(1.0, 0.01 * height)
    centroids = points[triangles].mean(axis=1)
    splat = np.concatenate([points, centroids])
    origin = splat[:, :2].min(axis=0)
    cells = np.floor((splat[:, :2] - origin) / cell).astype(np.int64)
    shape = cells.max(axis=0) + 1
    zbuf = np.full(int(shape[0] * shape[1]), -np.inf)
    np.maximum.at(zbuf, cells[:, 0] * shape[1] + cells[:, 1], splat[:, 2])
    own = cells[: len(points)]
    on_top = points[:, 2] >= zbuf[own[:, 0] * shape[1] + own[:, 1]] - DEPTH_TOLERANCE * height
    return on_top & (normals[:, 2] >= min_facing)


def skin_in_photo(points_px: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Where a face's skin colour may be read (uint8 mask of the image): inside the landmarks' hull, away from its
    edge (hair, background, collar), outside the eye and mouth openings (an eye or teeth painted on skin)."""
    height = float(np.ptp(points_px[:, 1])) or 1.0
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points_px[:468]).astype(np.int32)), 1)
    edge = max(1, round(EDGE_MARGIN * height))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge + 1, 2 * edge + 1)))
    openings = np.zeros_like(mask)
    for contour in (*EYE_OPENINGS, MOUTH_OPENING):
        cv2.fillPoly(openings, [np.round(points_px[list(contour)]).astype(np.int32)], 1)
    grow = max(1, round(OPENING_MARGIN * height))
    openings = cv2.dilate(openings, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return mask & (1 - openings)


def luminance(linear: np.ndarray) -> np.ndarray:
    return linear @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def photo_shading(lum: np.ndarray, normals: np.ndarray, iterations: int = 3) -> np.ndarray:
    """First-order SH shading a + b·n fitted to luminance (robust: residuals beyond 2.5 MADs dropped each pass)."""
    design = np.concatenate([np.ones((len(normals), 1)), normals], axis=1)
    keep = np.ones(len(lum), bool)
    coef = np.zeros(4)
    for _ in range(iterations):
        coef, *_ = np.linalg.lstsq(design[keep], lum[keep], rcond=None)
        residual = lum - design @ coef
        mad = float(np.median(np.abs(residual[keep] - np.median(residual[keep])))) or 1e-6
        keep = np.abs(residual) <= 2.5 * 1.4826 * mad
    return design @ coef


def delight(linear: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Colours with the photo's low-frequency light divided out, the mean brightness kept."""
    lum = luminance(linear).astype(np.float64)
    shading = photo_shading(lum, normals.astype(np.float64))
    level = float(np.median(shading))
    if not level > 1e-4:
        return linear
    ratio = np.clip(level / np.maximum(shading, 1e-6), *DELIGHT_RANGE)
    return np.clip(linear * ratio[:, None], 0.0, 1.0).astype(np.float32)


def texture_from_face(rgb: np.ndarray, points_px: np.ndarray, depth_px: np.ndarray,
                      skin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(linear colours, valid) on the fit's compact vertices for one face of an RGB uint8 image.

    ``points_px``/``depth_px``: the face's MediaPipe landmarks in the image's pixels (:class:`MeshLandmarks`);
    ``skin``: which compact vertices may take a colour (face skin, not the eyeballs).
    """
    face = load_ict_face()
    crop = crop_points_from_pixels(points_px, depth_px, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    fit = fit_landmarks(crop, face)
    points = fit.crop_points(face).astype(np.float64)
    normals = vertex_normals(points, face.triangles)
    x, y = points[:, 0], -points[:, 1]  # back to image pixels (y down)
    height, width = rgb.shape[:2]
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    allowed = skin_in_photo(points_px, rgb.shape)
    col, row = np.clip(np.round(x), 0, width - 1).astype(np.int64), np.clip(np.round(y), 0, height - 1).astype(np.int64)
    valid = visible_vertices(points, normals, face.triangles) & inside & skin & (allowed[row, col] > 0)
    image = albedo.srgb_to_linear(rgb.astype(np.float32) / 255.0)
    sampled = cv2.remap(image, x.astype(np.float32)[None], y.astype(np.float32)[None], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)[0]
    colors = np.zeros((len(points), 3), np.float32)
    if valid.any():
        colors[valid] = delight(sampled[valid], normals[valid])
    return colors, valid


def build_bank(inputs: Iterable[str | Path], model: ict.IctModel, every: int = 10,
               min_face_px: float = 150.0) -> list[PhotoTexture]:
    """Textures of every face at least ``min_face_px`` tall in the photos / videos (every ``every``-th frame)."""
    from facenormals.faces import FaceMesh
    from facenormals.training.data.photos import iter_frames

    full = compact_to_full(model)
    skin_compact = ~np.load(ASSET, allow_pickle=False)["eyeball"]
    face_skin = model.region == ict.FACE
    textures: list[PhotoTexture] = []
    with FaceMesh(max_faces=8, still=True) as mesh:
        for source in inputs:
            source = Path(source)
            for frame in tqdm(iter_frames(source, every), desc=f"textures {source.name}", unit="frame"):
                if isinstance(frame, DataError):
                    print(f"skipped: {frame}")
                    continue
                found = sorted(mesh.find(frame.rgb), key=lambda f: float(f.points[:, 0].min()))
                for index, landmarks in enumerate(found):
                    if float(np.ptp(landmarks.points[:, 1])) < min_face_px:
                        continue
                    colors, valid = texture_from_face(frame.rgb, landmarks.points, landmarks.depth, skin_compact)
                    if valid.sum() < MIN_VALID_SHARE * face_skin.sum():
                        continue
                    full_colors = np.zeros((len(model.neutral), 3), np.float32)
                    full_valid = np.zeros(len(model.neutral), bool)
                    full_colors[full[valid]] = colors[valid]
                    full_valid[full[valid]] = True
                    group = frame.video or f"{frame.name}#{index}"  # one person: a photo's face, or a whole video
                    textures.append(PhotoTexture(f"{frame.name}#{index}", group, full_colors, full_valid))
    return textures


def save_bank(path: str | Path, textures: list[PhotoTexture]) -> Path:
    """Write the bank atomically (float16 colours, packed masks)."""
    if not textures:
        raise DataError(f"{path}: no face large enough was found: nothing to write")
    path = Path(path)
    with atomic_path(path, ".npz") as tmp:
        np.savez_compressed(tmp, names=np.array([t.name for t in textures]), groups=np.array([t.group for t in textures]),
                            colors=np.stack([t.colors for t in textures]).astype(np.float16),
                            valid=np.packbits(np.stack([t.valid for t in textures]), axis=1),
                            num_vertices=np.int64(len(textures[0].valid)))
    return path


def load_bank(path: str | Path) -> list[PhotoTexture]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: photo texture bank not found (make it: facenormals data textures --in ... --out {path})")
    try:
        with np.load(path, allow_pickle=False) as data:
            count = int(data["num_vertices"])
            valid = np.unpackbits(data["valid"], axis=1, count=count).astype(bool)
            return [PhotoTexture(str(n), str(g), c.astype(np.float32), v)
                    for n, g, c, v in zip(data["names"], data["groups"], data["colors"], valid, strict=True)]
    except (KeyError, ValueError, OSError) as err:
        raise DataError(f"{path}: not a photo texture bank ({err})") from err


class PhotoTextureBank:
    """Dresses ICT faces in real photo colours: a random source (person) first, then one of its textures."""

    def __init__(self, path: str | Path, model: ict.IctModel) -> None:
        self.textures = load_bank(path)
        if len(self.textures[0].valid) != len(model.neutral):
            raise DataError(f"{path}: made for a model of {len(self.textures[0].valid)} vertices, "
                            f"this ICT model has {len(model.neutral)}")
        members: dict[str, list[int]] = {}
        for i, texture in enumerate(self.textures):
            members.setdefault(texture.group, []).append(i)
        self.groups = list(members.values())  # texture indices of each person
        self.skin = np.isin(model.region, (ict.FACE, ict.HEAD_NECK))

    def sample(self, layout: albedo.FaceLayout, rng: np.random.Generator,
               base: albedo.FaceAlbedo) -> albedo.FaceAlbedo:
        """A photo's colours on the skin they cover (tone-shifted half of the time), procedural elsewhere."""
        members = self.groups[int(rng.integers(len(self.groups)))]
        texture = self.textures[members[int(rng.integers(len(members)))]]
        gain = float(rng.uniform(0.45, 1.3)) if rng.random() < 0.5 else 1.0  # darker/lighter, same hue
        colors = texture.colors * gain
        valid = texture.valid
        procedural = base.colors
        # procedural skin elsewhere, matched to the photo's median so that the seams do not show
        rest = self.skin & ~valid
        ratio = np.median(colors[valid], 0) / np.maximum(np.median(procedural[rest], 0), 1e-4) if rest.any() else 1.0
        fill = np.where(rest[:, None], procedural * ratio, procedural)
        out = np.where(valid[:, None], colors, fill)
        hair = np.where(valid, 0.0, base.hair_offset).astype(np.float32)  # the photo's hairline is painted on
        return albedo.FaceAlbedo(np.clip(out, 0, 1).astype(np.float32), base.shininess, hair,
                                 {"albedo": "photo", "texture": texture.name, "gain": round(gain, 3)})
