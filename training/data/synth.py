"""One synthetic sample: pose a face mesh by the paper's protocol, light it, render and post-process it.

Convention: model space has the face looking toward +z, +y up (ICT and James already do); camera space
is OpenGL's (+x right, +y up, +z toward the camera), so the normals written are the project's convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facenormals.geometry import hull_mask, normalise_rows
from facenormals.training.data import augment, lighting, relief, shadows
from facenormals.training.data.camera import crop_camera
from facenormals.training.data.renderer import Fragments, rasterize, vertex_normals

PAPER_MAX_ANGLE = np.pi / 4


@dataclass
class SceneMesh:
    """A face mesh ready to render. Units are arbitrary but ``mm_per_unit`` converts them to millimetres."""

    vertices: np.ndarray  # V×3 model space, face toward +z
    faces: np.ndarray  # F×3, counter-clockwise from outside
    oval: np.ndarray  # K×3 points tracing the facial outline: mask hull and crop square
    mm_per_unit: float
    albedo: np.ndarray | None = None  # V×3 linear RGB
    shininess: np.ndarray | None = None  # V specular weight
    wet: np.ndarray | None = None  # V in [0, 1]: eyes (sharp catchlights)
    texture: np.ndarray | None = None  # H×W×3 linear RGB
    uv: np.ndarray | None = None  # T×2 (v = 0 at the bottom row)
    faces_uv: np.ndarray | None = None  # F×3 indices into uv
    pivot: np.ndarray | None = None  # rotation centre (default: centre of the oval)
    # fine relief (relief.py): per-vertex weight (0 = none) and the positions (mm) its field is attached to
    relief_weight: np.ndarray | None = None  # V
    relief_positions_mm: np.ndarray | None = None  # V×3, e.g. the neutral face's
    cull_backfaces: bool = True
    params: dict = field(default_factory=dict)
    identity: np.ndarray | None = None  # an ICT face's identity weights (all modes); None for scans


@dataclass
class RenderSettings:
    size: int = 256
    kind: str = "paired"  # or "normal-only"
    camera: str = "mixed"  # pinhole, weak-perspective or mixed (80 % pinhole)
    max_angle: float = PAPER_MAX_ANGLE
    hard_fraction: float = 0.0  # validation: strong rotations and harsh side light
    crop_jitter: bool = True
    # profile sets (issue 14): |yaw| uniform in [lo, hi] radians with a random sign, small pitch and roll
    # (yaw_pose); replaces the axis-angle protocol (max_angle, hard rotations) for the pose, not the light
    yaw_range: tuple[float, float] | None = None
    # share of samples posed by yaw_pose when yaw_range is set; the rest follow the paper's protocol. 1 = a
    # profile set; e.g. 0.25 with yaw_range 45–90° = a training set with a quarter of its faces beyond ±45°
    profile_fraction: float = 1.0
    # fine relief on meshes that carry a relief weight: RMS tilt uniform in [0, relief_deg] per sample (0: none,
    # nothing drawn, so sets rendered without it keep their random streams)
    relief_deg: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.relief_deg <= relief.MAX_RELIEF_DEG:
            raise ValueError(f"relief_deg must be in [0, {relief.MAX_RELIEF_DEG:g}], got {self.relief_deg:g}")
        if not 0.0 <= self.profile_fraction <= 1.0:
            raise ValueError(f"profile_fraction must be in [0, 1], got {self.profile_fraction:g}")
        if self.yaw_range is not None:
            lo, hi = self.yaw_range
            if not 0.0 <= lo <= hi <= np.pi / 2 + 1e-9:
                raise ValueError(f"yaw_range must satisfy 0 ≤ lo ≤ hi ≤ 90°, got {np.degrees(lo):.1f}°, {np.degrees(hi):.1f}°")


@dataclass
class Rendered:
    mask: np.ndarray
    normals: np.ndarray
    image: np.ndarray | None
    depth_mm: np.ndarray
    params: dict


def random_rotation(rng: np.random.Generator, max_angle: float, min_angle: float = 0.0) -> tuple[np.ndarray, float, np.ndarray]:
    """The paper's protocol: axis uniform on the sphere, angle uniform in [−max, max] (|angle| ≥ min_angle)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = float(rng.uniform(min_angle, max_angle) * rng.choice([-1.0, 1.0]))
    rot, _ = cv2.Rodrigues((axis * angle).reshape(3, 1))
    return axis.astype(np.float32), angle, rot.astype(np.float64)


PROFILE_PITCH_ROLL_SIGMA = np.radians(6.0)  # yaw_pose: pitch and roll ~ N(0, 6°), clipped to ±15°
PROFILE_PITCH_ROLL_MAX = np.radians(15.0)


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def yaw_pose(rng: np.random.Generator, min_yaw: float, max_yaw: float) -> tuple[np.ndarray, float, np.ndarray]:
    """A head turned by |yaw| uniform in [min_yaw, max_yaw] (random sign), with small pitch and roll.

    ``rot = Ry(yaw) · Rx(pitch) · Rz(roll)``: exactly the angles :func:`euler_yaw_pitch_roll` reads back, so the
    ``yaw_deg`` a sample records is the yaw that was drawn. Returns (axis, angle, rotation) like
    :func:`random_rotation`.
    """
    yaw = float(rng.uniform(min_yaw, max_yaw) * rng.choice([-1.0, 1.0]))
    pitch, roll = np.clip(rng.normal(0.0, PROFILE_PITCH_ROLL_SIGMA, 2), -PROFILE_PITCH_ROLL_MAX, PROFILE_PITCH_ROLL_MAX)
    rot = _axis_rotation(1, yaw) @ _axis_rotation(0, float(pitch)) @ _axis_rotation(2, float(roll))
    vec, _ = cv2.Rodrigues(rot)
    angle = float(np.linalg.norm(vec))
    axis = (vec.ravel() / angle) if angle > 1e-12 else np.array([0.0, 1.0, 0.0])
    return axis.astype(np.float32), angle, rot


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """N×3 → float32 unit rows, zero rows stay zero: conventions.normalize's result, in one compiled pass."""
    return normalise_rows(np.array(vectors, dtype=np.float32, order="C"), 1e-8)


def euler_yaw_pitch_roll(rot: np.ndarray) -> tuple[float, float, float]:
    """Head pose angles (degrees) of a camera-space rotation: yaw about y, pitch about x, roll about z."""
    yaw = np.degrees(np.arctan2(rot[0, 2], rot[2, 2]))
    pitch = np.degrees(np.arcsin(-np.clip(rot[1, 2], -1, 1)))
    roll = np.degrees(np.arctan2(rot[1, 0], rot[1, 1]))
    return float(yaw), float(pitch), float(roll)


def render(mesh: SceneMesh, settings: RenderSettings, rng: np.random.Generator,
           backgrounds: augment.Backgrounds | None = None) -> Rendered:
    size = settings.size
    hard = rng.random() < settings.hard_fraction
    profile = settings.yaw_range is not None and (
        settings.profile_fraction >= 1.0 or rng.random() < settings.profile_fraction)  # full profile sets draw nothing
    if profile:
        axis, angle, rot = yaw_pose(rng, *settings.yaw_range)
    elif hard:
        axis, angle, rot = random_rotation(rng, np.radians(55), np.radians(35))
    else:
        axis, angle, rot = random_rotation(rng, settings.max_angle)
    cam_kind = settings.camera
    if cam_kind == "mixed":
        cam_kind = "pinhole" if rng.random() < 0.8 else "weak-perspective"
    pivot = mesh.pivot if mesh.pivot is not None else mesh.oval.mean(axis=0)
    face_height = float(np.ptp(mesh.oval[:, 1]))
    distance = face_height * rng.uniform(2.5, 9.0)  # ~45–160 cm for an 18 cm face
    offset = np.array([0.0, 0.0, -distance])
    verts = (mesh.vertices - pivot) @ rot.T + offset
    oval = (mesh.oval - pivot) @ rot.T + offset
    shift = tuple(np.clip(rng.normal(0, 0.03, 2), -0.08, 0.08)) if settings.crop_jitter else (0.0, 0.0)
    scale = float(rng.uniform(0.94, 1.08)) if settings.crop_jitter else 1.0
    camera, _ = crop_camera(cam_kind, oval, size, shift, scale)
    xy, depth = camera.project(verts)
    frags = rasterize(xy, depth, mesh.faces, (size, size), cull_backfaces=mesh.cull_backfaces,
                      perspective=camera.perspective)
    covered = frags.covered
    vn = vertex_normals(mesh.vertices, mesh.faces) @ rot.T.astype(np.float32)
    # one gather for every per-vertex attribute: normals, positions, then albedo and shininess when shaded;
    # kept per covered pixel (N×C, row-major: the order of image[covered]), not as H×W maps
    columns = [vn, verts.astype(np.float32)]
    shaded = settings.kind == "paired"
    if shaded and mesh.albedo is not None:
        columns.append(mesh.albedo)
    if shaded and mesh.wet is not None:
        columns.append(mesh.wet[:, None])
    if shaded and mesh.shininess is not None:
        columns.append(mesh.shininess[:, None])
    with_relief = settings.relief_deg > 0 and mesh.relief_weight is not None
    if with_relief:  # last: the columns above keep their indices
        positions = mesh.relief_positions_mm if mesh.relief_positions_mm is not None else mesh.vertices * mesh.mm_per_unit
        columns.append(np.hstack([positions, mesh.relief_weight[:, None]]).astype(np.float32))
    attrs = frags.vertex_values(np.hstack(columns), mesh.faces)
    relief_attrs = None
    if with_relief:
        relief_attrs, attrs = attrs[:, -4:], attrs[:, :-4]
    shading_normals = _unit_rows(attrs[:, 0:3])
    points = attrs[:, 3:6]
    vertex_albedo = attrs[:, 6:9] if shaded and mesh.albedo is not None else None
    shininess = attrs[:, -1] if shaded and mesh.shininess is not None else None
    wet_col = 6 + 3 * (mesh.albedo is not None)
    wet = attrs[:, wet_col] if shaded and mesh.wet is not None else None
    if not mesh.cull_backfaces:
        # unknown winding: a visible surface always faces the viewer, so flip normals that point away
        away = np.sum(shading_normals * points, axis=1) > 0
        shading_normals[away] *= -1
    relief_params = {}
    if relief_attrs is not None:
        shading_normals, relief_params = _with_relief(shading_normals, relief_attrs, rot, settings.relief_deg, rng)
    oval_xy, _ = camera.project(oval)
    mask = hull_mask(oval_xy, (size, size)) & covered
    normals = frags.scatter(shading_normals)
    depth_mm = np.clip(np.round(frags.depth * mesh.mm_per_unit), 0, 65535).astype(np.uint16)
    depth_mm[~covered] = 0
    yaw, pitch, roll = euler_yaw_pitch_roll(rot)
    params = {"rotation_axis": [round(float(v), 5) for v in axis], "rotation_angle_deg": round(np.degrees(angle), 4),
              "yaw_deg": round(yaw, 3), "pitch_deg": round(pitch, 3), "roll_deg": round(roll, 3),
              "rotation_matrix": [[round(float(v), 6) for v in row] for row in rot],
              "camera": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in camera.as_dict().items()},
              "distance_mm": round(distance * mesh.mm_per_unit, 1), "crop_shift": [round(float(s), 4) for s in shift],
              "crop_scale": round(scale, 4), "hard": bool(hard), "profile": bool(profile), **relief_params,
              **mesh.params}
    normals[~mask] = 0.0  # covered but outside the face's hull
    image = None
    if settings.kind == "paired":
        surface = Surface(shading_normals, points, vertex_albedo, shininess, wet, verts, face_height)
        image, shade_params = _shade_image(mesh, frags, surface, mask, rng, hard, backgrounds, size)
        params.update(shade_params)
    return Rendered(mask, normals, image, depth_mm, params)


def _with_relief(normals: np.ndarray, relief_attrs: np.ndarray, rot: np.ndarray, max_deg: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Camera-space normals (N×3) tilted by a fresh relief field (RMS tilt uniform in [0, max_deg]) evaluated at
    the pixels' attached positions and weighted by their relief weight (``relief_attrs``: N×4, mm and weight)."""
    tilt = float(rng.uniform(0.0, max_deg))
    field = relief.Relief.sample(rng, tilt)
    gradient = field.gradient(relief_attrs[:, :3]) @ rot.T  # model → camera, as the normals
    return relief.tilt_normals(normals, gradient, relief_attrs[:, 3]), {"relief_deg": round(tilt, 3)}


@dataclass
class Surface:
    """Surface attributes of a render's covered pixels (N×C, ``Fragments.pixels`` order) and the posed
    vertices, for shading."""

    normals: np.ndarray
    points: np.ndarray
    albedo: np.ndarray | None
    shininess: np.ndarray | None
    wet: np.ndarray | None
    vertices: np.ndarray
    face_height: float


def _shade_image(mesh: SceneMesh, frags: Fragments, surface: Surface, mask: np.ndarray, rng: np.random.Generator,
                 hard: bool, backgrounds: augment.Backgrounds | None, size: int) -> tuple[np.ndarray, dict]:
    """Shade every covered pixel (not only the mask), tone-map, composite on a background, degrade."""
    covered, pixels = frags.covered, frags.pixels
    normals, points, vertex_albedo, shin = surface.normals, surface.points, surface.albedo, surface.shininess
    light = lighting.sample_lighting(rng, harsh=hard)
    if mesh.texture is not None and mesh.uv is not None and mesh.faces_uv is not None:
        uv = frags.interpolate(mesh.uv[mesh.faces_uv])
        th, tw = mesh.texture.shape[:2]
        albedo_img = cv2.remap(mesh.texture, (uv[..., 0] * tw - 0.5).astype(np.float32),
                               ((1 - uv[..., 1]) * th - 0.5).astype(np.float32), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        albedo = albedo_img.reshape(-1, 3)[pixels]
    elif vertex_albedo is not None:
        albedo = vertex_albedo
    else:
        grey = np.full((len(mesh.vertices), 3), rng.uniform(0.2, 0.6), np.float32)
        albedo = frags.vertex_values(grey, mesh.faces)
    if mesh.texture is None:
        detail = augment.skin_detail((size, size), rng, float(rng.uniform(0.01, 0.04)))
        albedo = albedo * detail.reshape(-1, 1)[pixels]
    shadow = None
    if light.shadows and light.intensity > 0.05:
        # bias ~1 mm on a face (+ slope term): lit skin must not shadow itself, the nose must shadow the cheek
        shadow = shadows.shadow_factor(surface.vertices, mesh.faces, points, normals, light.direction,
                                       bias=0.005 * surface.face_height, cull_backfaces=mesh.cull_backfaces)
        # soft penumbra: blur the visibility over the covered pixels (normalised, so edges do not darken)
        vis = np.zeros(size * size, np.float32)
        vis[pixels] = shadow
        sigma = float(rng.uniform(0.6, 2.0))
        weight = cv2.GaussianBlur(covered.astype(np.float32), (0, 0), sigma).reshape(-1)[pixels]
        blurred = cv2.GaussianBlur(vis.reshape(size, size), (0, 0), sigma).reshape(-1)[pixels]
        shadow = (blurred / np.maximum(weight, 1e-3)).astype(np.float32)
    radiance = lighting.shade(normals, albedo, light, shadow=shadow, specular_mask=shin, view=_unit_rows(-points),
                              wet=surface.wet)
    face = mask if mask.any() else covered
    face_pixels = face.reshape(-1)[pixels]  # the face's pixels among the covered ones, in the same order
    albedo_lum = float(albedo[face_pixels].mean()) if face.any() else 0.18
    display, tone = augment.tone_map(radiance, face_pixels, rng, albedo_lum)  # the covered pixels: others stay black
    display = frags.scatter(display)
    bg, bg_kind = backgrounds.sample(size, rng) if backgrounds is not None else (
        augment.procedural_background(size, rng), "procedural")
    image = augment.composite(display, covered, bg)
    image, deg = augment.degrade(image, rng)
    return image, {**light.as_dict(), **tone, **deg, "background": bg_kind}
