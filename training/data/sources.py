"""Face sources for the renderer: random ICT-FaceKit faces, and user meshes (see meshes.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facenormals.faces import FaceMesh
from facenormals.fileio import DataError
from facenormals.training.data import albedo, detail, ict, meshes
from facenormals.training.data.jobs import read_params, sample_rng
from facenormals.training.data.renderer import vertex_normals
from facenormals.training.data.synth import SceneMesh

FOLD_LIMIT = 0.002  # plausibility bound on a broadened identity: ≤ 0.2 % folded face triangles (ICT's own ≤ 0.17 %)
RELIEF_FADE_MM = (3.0, 8.0)
MILD_EXPRESSION_MAX = 0.3  # a mild face's expression weights are the random mix's times U(0, this)
DETAIL_FOLD_LIMIT = 0.0003  # the detail field may fold over at most 0.03 % more (≈ 5 of the face's 18 460 triangles)


class IctSource:
    """Random ICT identities, expressions and gaze, with procedural or transferred albedo.

    Identity weights are N(0, 1)·s with the per-face scale s uniform in ``identity_scale`` (lo, hi): (1, 1) is
    the model's own prior; a wider hi is a Gaussian scale mixture, heavier-tailed than N(0, 1) while most faces
    stay typical. A face whose skin folds more than ICT's own N(0, 1) faces do is shrunk toward N(0, 1) until it
    does not (``FOLD_LIMIT``); params record the scale kept. ``detail_mm`` > 0 adds a smooth displacement
    outside the model's span (detail.py) whose peak is uniform in [0, detail_mm]. A share ``mild_expressions`` of
    the faces has its random expression mix (≈ 8 of ICT's 53 at U[0, 1] each) scaled by U(0, 0.3): near-neutral
    faces, as most real photos are, where the mix alone never draws one.
    """

    name = "ict"

    def __init__(self, path: str | Path | None = None, p_transfer: float = 0.0,
                 identity_scale: tuple[float, float] = (1.0, 1.0), detail_mm: float = 0.0,
                 mild_expressions: float = 0.0) -> None:
        lo, hi = identity_scale
        if not 0.0 < lo <= hi:
            raise ValueError(f"identity_scale must satisfy 0 < lo ≤ hi, got {lo:g} {hi:g}")
        if detail_mm < 0:
            raise ValueError(f"detail_mm must be ≥ 0, got {detail_mm:g}")
        if not 0.0 <= mild_expressions <= 1.0:
            raise ValueError(f"mild_expressions must be in [0, 1], got {mild_expressions:g}")
        self.mild_expressions = float(mild_expressions)
        self.model = ict.IctModel(path)
        self.identity_scale = (float(lo), float(hi))
        self.detail_mm = float(detail_mm)
        self.detail = detail.DetailField.for_model(self.model) if detail_mm > 0 else None
        if self.detail is not None:
            # the triangles around displaced vertices: their normals come out the same, at ~40 % of the cost
            touched = (self.detail.weight > 0)[self.model.faces].any(axis=1)
            self._detail_faces = self.model.faces[touched]
        # fine relief (relief.py, drawn by the renderer when asked): skin only, faded within 3–8 mm of the eyes,
        # nostrils and mouth (closer than the smooth field: crow's feet and lip lines are relief), on the neutral face
        self.relief = detail.DetailField.for_model(self.model, fade_mm=RELIEF_FADE_MM)
        self.layout = albedo.face_layout(self.model)
        self.oval_ids = np.array(ict.FACE_OVAL, np.int64)
        self.transfer = None
        self.p_transfer = 0.0
        self._p_transfer = p_transfer
        self.photos = None
        self.p_photo = 0.0

    def keep_plausible(self, shape: ict.FaceShape, scale: float) -> float:
        """Shrink a broadened identity (×0.9 at a time, never below N(0, 1)) until its skin folds no more than
        ICT's own faces do; returns the scale kept and updates ``shape`` in place."""
        identity = shape.identity / scale
        kept = scale
        while kept > 1.0 and self.model.identity_folded_share(identity * kept) > FOLD_LIMIT:
            kept = max(1.0, kept * 0.9)
        if kept != scale:
            shape.identity = (identity * kept).astype(np.float32)
            shape.vertices = self.model.build(shape.identity, shape.expression, shape.gaze)
        return kept

    def add_detail(self, vertices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Displace along the normals by a field of peak uniform in [0, detail_mm]; the peak is halved while it
        folds over more than ``DETAIL_FOLD_LIMIT`` of the face's triangles (thin ears). Returns (vertices, peak mm)."""
        amplitude = float(rng.uniform(0.0, self.detail_mm))
        unit = self.detail.sample(rng, 1.0) / 10.0  # cm per mm of peak
        normals = vertex_normals(vertices, self._detail_faces)
        base = self.model.folded_share(vertices)
        while True:
            displaced = vertices + normals * (unit * amplitude)[:, None]
            if amplitude < 0.05 or self.model.folded_share(displaced) - base <= DETAIL_FOLD_LIMIT:
                return displaced.astype(np.float32), amplitude
            amplitude *= 0.5

    def enable_transfer(self, scan_folder: str | Path) -> None:
        """Give a share of the faces the texture of a scan (see transfer.py)."""
        from facenormals.training.data.transfer import JamesTransfer

        self.transfer = JamesTransfer.from_folder(scan_folder, self.model)
        self.p_transfer = self._p_transfer

    def enable_photo_textures(self, bank_path: str | Path, p_photo: float) -> None:
        """Dress a share of the faces in real photo colours (photo_textures.py)."""
        from facenormals.training.data.photo_textures import PhotoTextureBank

        if not 0.0 <= p_photo <= 1.0:
            raise ValueError(f"p_photo must be in [0, 1], got {p_photo:g}")
        self.photos = PhotoTextureBank(bank_path, self.model)
        self.p_photo = float(p_photo)

    def sample(self, rng: np.random.Generator, with_albedo: bool = True, replay: dict | None = None) -> SceneMesh:
        """A random face; ``replay``: a stored sample's params when drawing it again (:meth:`regenerate`)."""
        lo, hi = self.identity_scale
        # drawn only when the range is open: sets rendered with the default keep their random streams
        scale = float(rng.uniform(lo, hi)) if hi > lo else lo
        mild = self._near_neutral(rng, replay)
        expression_scale = float(rng.uniform(0.0, MILD_EXPRESSION_MAX)) if mild else 1.0
        shape = self.model.sample(rng, identity_scale=scale, expression_scale=expression_scale)
        if scale > 1.0:
            scale = self.keep_plausible(shape, scale)
        params: dict = {"source": "ict", "identity_norm": round(float(np.linalg.norm(shape.identity)), 3),
                        "identity_scale": round(scale, 4),
                        "expressions": {self.model.expression_names[i]: round(float(shape.expression[i]), 3)
                                        for i in np.nonzero(shape.expression)[0]},
                        "gaze_deg": [round(g, 2) for g in shape.gaze]}
        # sets rendered without a near-neutral share keep their params as they were
        recorded = self.mild_expressions > 0 if replay is None else "expression_scale" in replay
        if recorded:
            params["expression_scale"] = round(expression_scale, 4)
        colors = shininess = None
        verts = shape.vertices
        if self.detail is not None:
            verts, amplitude = self.add_detail(verts, rng)
            params["detail_mm"] = round(amplitude, 3)
        if with_albedo:
            use_transfer = rng.random() < self.p_transfer
            look = albedo.procedural_albedo(self.model, self.layout, rng)
            if use_transfer:
                look = self.transfer.sample(self.layout, rng, look)
            # drawn only with a bank, so that sets made without one keep their random streams
            elif self.photos is not None and rng.random() < self.p_photo:
                look = self.photos.sample(self.layout, rng, look)
            colors, shininess = look.colors, look.shininess
            params.update(look.params)
            if look.hair_offset.any():
                # hair has volume: lift the scalp along its normals (the image and the normals both see it)
                verts = verts + vertex_normals(verts, self.model.faces) * look.hair_offset[:, None]
        wet = np.clip(self.layout.sclera + self.layout.iris, 0, 1) if with_albedo else None
        return SceneMesh(vertices=verts, faces=self.model.faces, oval=shape.vertices[self.oval_ids], mm_per_unit=10.0,
                         albedo=colors, shininess=shininess, wet=wet, params=params,
                         relief_weight=self.relief.weight, relief_positions_mm=self.relief.positions_mm,
                         identity=shape.identity)

    def _near_neutral(self, rng: np.random.Generator, replay: dict | None) -> bool:
        """Whether this face's expression mix is scaled down: drawn (only when the source has a share, so that sets
        rendered without one keep their random streams), or, replaying a stored sample, the draw its params record —
        a set rendered with a share records ``expression_scale`` for every face — whatever this source's share."""
        if replay is None:
            return self.mild_expressions > 0 and rng.random() < self.mild_expressions
        if "expression_scale" not in replay:
            return False
        rng.random()  # the share's draw, spent as when the sample was rendered
        return float(replay["expression_scale"]) < 1.0

    def regenerate(self, seed: int, index: int, stored: dict, where: Path, with_albedo: bool = False) -> SceneMesh:
        """Sample ``index`` of a set rendered with ``seed`` by this source's settings, drawn again
        (``sample_rng(seed, index)``; the near-neutral draw as its params record it, so the source needs the set's
        identity range but not its ``--mild-expressions`` share); ``stored``: the sample's params (``where``: their
        file), checked against the drawn face's identity norm, so that a wrong seed or identity range fails instead
        of measuring another face. The identity is drawn before the albedo: ``with_albedo`` only matters for what the
        albedo moves (the hairline)."""
        mesh = self.sample(sample_rng(seed, index), with_albedo=with_albedo, replay=stored)
        if abs(mesh.params["identity_norm"] - stored["identity_norm"]) > 2e-3:
            raise DataError(f"{where}: the regenerated face differs from the stored one (identity norm "
                            f"{mesh.params['identity_norm']} vs {stored['identity_norm']}): wrong seed or "
                            "identity scale")
        return mesh


def rendered_identity(source: IctSource, root: Path, name: str) -> np.ndarray:
    """The identity weights sample ``name`` of the ICT set ``root`` was rendered with: drawn again by ``source``
    (the set's identity range) from the seed and index its params record, checked against the stored norm."""
    where = root / "params" / f"{name}.json"
    stored = read_params(root, name)
    if stored is None:
        raise DataError(f"{where}: no params for {name} (an ICT set rendered by 'facenormals data render')")
    if stored.get("source") != "ict":
        raise DataError(f"{where}: not an ICT face (source {stored.get('source')!r})")
    return source.regenerate(stored["seed"], stored["index"], stored, where).identity


FACE_OVAL_LANDMARKS = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251,
                       284, 288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
"""MediaPipe's FACEMESH_FACE_OVAL landmark ids (the outline whose hull is the realtime path's mask)."""


@dataclass
class PreparedMesh:
    path: Path
    vertices: np.ndarray
    faces: np.ndarray
    oval: np.ndarray
    mm_per_unit: float
    albedo: np.ndarray | None
    texture: np.ndarray | None
    uv: np.ndarray | None
    faces_uv: np.ndarray | None


class MeshSource:
    """Meshes from a folder, used in turn (sample i renders mesh i mod n) with random pose, light and crop."""

    name = "mesh"

    def __init__(self, folder: str | Path, units: str = "auto") -> None:
        self.paths = meshes.list_meshes(folder)
        self.units = units
        self._cache: dict[Path, PreparedMesh | DataError] = {}
        self._landmarker = None

    def prepare(self, path: Path) -> PreparedMesh:
        if path not in self._cache:
            try:
                self._cache[path] = self._prepare(path)
            except DataError as err:
                self._cache[path] = err
        entry = self._cache[path]
        if isinstance(entry, DataError):
            raise entry
        return entry

    def _prepare(self, path: Path) -> PreparedMesh:
        mesh = meshes.load_mesh(path)
        mm = meshes.guess_mm_per_unit(mesh.vertices, self.units)
        texture = albedo.srgb_to_linear(mesh.texture.astype(np.float32) / 255.0) if mesh.texture is not None else None
        colors = albedo.srgb_to_linear(mesh.colors) if mesh.colors is not None else None
        oval = self._face_oval(mesh, texture, colors)
        return PreparedMesh(path, mesh.vertices, mesh.faces, oval, mm, colors, texture, mesh.uv, mesh.faces_uv)

    def _face_oval(self, mesh: meshes.LoadedMesh, texture: np.ndarray | None, colors: np.ndarray | None) -> np.ndarray:
        """3-D outline points: MediaPipe's face oval found on a frontal render, else from sidecar landmarks."""
        if self._landmarker is None:
            # MediaPipe's plain landmarks: the oval decides the scan's crop, and the data engine's output is pinned
            # (tests/test_data_render_identity.py); the light-steadied ones would move it by a fraction of a pixel
            self._landmarker = FaceMesh(max_faces=1, steady=False)
        image, xy, _frags, front = frontal_render(mesh.vertices, mesh.faces, texture, mesh.uv, mesh.faces_uv, colors)
        faces = [found.points for found in self._landmarker.find(image)]
        if faces:
            pts = faces[0][list(FACE_OVAL_LANDMARKS)]
            cand = np.nonzero(front)[0]
            ids = [int(cand[np.argmin(np.sum((xy[cand] - p) ** 2, 1))]) for p in pts]
            return mesh.vertices[ids]
        if mesh.landmarks is not None and len(mesh.landmarks) >= 17:
            return oval_from_landmarks(mesh.landmarks)
        raise DataError(f"{mesh.path}: MediaPipe found no face on a frontal render and there is no landmark "
                        "file (NAME.ljson or NAME.landmarks.npy/.txt, 68×3): is the face toward +z with +y up?")

    def sample(self, rng: np.random.Generator, index: int, with_albedo: bool = True) -> SceneMesh:
        path = self.paths[index % len(self.paths)]
        prep = self.prepare(path)
        params = {"source": "mesh", "mesh": path.name}
        colors = prep.albedo
        texture = prep.texture if with_albedo else None
        if with_albedo and texture is None and colors is None:
            tone = albedo.sample_skin_tone(rng)
            colors = np.tile(tone, (len(prep.vertices), 1))
            params["albedo"] = "uniform-skin-tone"
        else:
            params["albedo"] = "texture" if texture is not None else "vertex-colors"
        return SceneMesh(vertices=prep.vertices, faces=prep.faces, oval=prep.oval, mm_per_unit=prep.mm_per_unit,
                         albedo=colors if with_albedo else None, texture=texture,
                         uv=prep.uv, faces_uv=prep.faces_uv, cull_backfaces=False, params=params)


def oval_from_landmarks(landmarks68: np.ndarray) -> np.ndarray:
    """Approximate outline from 68 landmarks: the jaw (0–16) plus the brows raised by ⅓ of the face height."""
    jaw = landmarks68[:17]
    brows = landmarks68[17:27] if len(landmarks68) >= 27 else jaw[[0, -1]]
    height = float(np.ptp(landmarks68[:, 1]))
    return np.vstack([jaw, brows + np.array([0.0, height / 3.0, 0.0], np.float32)]).astype(np.float32)


def frontal_render(vertices: np.ndarray, faces: np.ndarray, texture: np.ndarray | None, uv: np.ndarray | None,
                   faces_uv: np.ndarray | None, colors: np.ndarray | None, size: int = 512, light=None):
    """A soft-lit frontal view that MediaPipe can read: (RGB uint8, vertex pixels V×2, fragments, front-facing V).
    ``light``: a :class:`~facenormals.training.data.lighting.Lighting` instead of the soft light from above the
    camera (exposed to the 98th percentile of the face either way)."""
    from facenormals.conventions import normalize
    from facenormals.training.data.lighting import Lighting, shade
    from facenormals.training.data.renderer import rasterize, vertex_normals

    lo, hi = vertices.min(0), vertices.max(0)
    centre = (lo + hi) / 2
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    distance = extent * 4.0
    focal = size * 0.9 * distance / extent
    v = vertices - centre
    depth = distance - v[:, 2]
    xy = np.stack([size / 2 + focal * v[:, 0] / depth, size / 2 - focal * v[:, 1] / depth], 1)
    frags = rasterize(xy, depth, faces, (size, size), cull_backfaces=False)
    vn = vertex_normals(vertices, faces)
    n = normalize(frags.interpolate_vertices(vn, faces))
    n[n[..., 2] < 0] *= -1
    if texture is not None and uv is not None and faces_uv is not None:
        uvs = frags.interpolate(uv[faces_uv])
        th, tw = texture.shape[:2]
        alb = cv2.remap(texture, (uvs[..., 0] * tw - 0.5).astype(np.float32),
                        ((1 - uvs[..., 1]) * th - 0.5).astype(np.float32), cv2.INTER_LINEAR)
    elif colors is not None:
        alb = frags.interpolate_vertices(colors, faces)
    else:
        alb = np.full((size, size, 3), 0.35, np.float32)
    if light is None:
        light = Lighting(np.array([0.0, 0.3, 0.95], np.float32) / np.float32(np.hypot(0.3, 0.95)), 1.0,
                         np.ones(3, np.float32))
        light.sh[0] = 0.5 / 0.886227
    img = np.zeros((size, size, 3), np.float32)
    c = frags.covered
    img[c] = shade(n[c], alb[c], light)
    img = np.clip(img / max(float(np.percentile(img[c], 98)), 1e-4) * 0.9, 0, 1) ** (1 / 2.2)
    img[~c] = 0.5
    front = np.zeros(len(vertices), bool)
    visible = np.unique(faces[frags.tri[c]])
    front[visible] = vn[visible, 2] > 0
    return (img * 255).astype(np.uint8), xy, frags, front
