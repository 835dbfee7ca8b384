"""Texture transfer from a textured scan (the James scan) onto the ICT topology, by correspondence.

Alignment: a similarity transform (Umeyama) from ICT's 68 landmarks to the scan's, then a thin-plate-spline
warp of the residuals, so eyes, nose, mouth and jaw line up; each ICT skin vertex then takes the colour of
the nearest point of a dense sampling of the scan's surface (its texture looked up through the UVs).
The scan's texture is shaded photographic colour, not albedo: it brings real skin detail, stubble and hair.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import RBFInterpolator
from scipy.spatial import cKDTree

from facenormals.fileio import DataError
from facenormals.training.data import albedo, ict, meshes

# menpo's LJSON groups (chin, leye, reye, leyebrow, nose, reyebrow, mouth) → iBUG-68 indices
MENPO_TO_IBUG = np.array(list(range(17)) + list(range(36, 42)) + list(range(42, 48)) + list(range(17, 22))
                         + list(range(27, 36)) + list(range(22, 27)) + list(range(48, 68)))


def menpo_to_ibug(points: np.ndarray) -> np.ndarray:
    """Reorder 68 landmarks from menpo's label order (as in james.ljson) to the iBUG-68 order."""
    out = np.empty_like(points)
    out[MENPO_TO_IBUG] = points
    return out


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (scale, R, t) minimising ‖s·R·src + t − dst‖² (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.ones(3)
    if np.linalg.det(u @ vt) < 0:
        d[2] = -1
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / (a ** 2).sum() * len(src))
    return scale, rot, mu_d - scale * rot @ mu_s


def sample_surface_colors(mesh: meshes.LoadedMesh, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform random points on a textured mesh and their sRGB texture colours."""
    if mesh.texture is None or mesh.uv is None or mesh.faces_uv is None:
        raise DataError(f"{mesh.path}: no texture to transfer (needs UVs and a texture image)")
    v, f = mesh.vertices.astype(np.float64), mesh.faces
    area = 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    tri = rng.choice(len(f), count, p=area / area.sum())
    r1, r2 = np.sqrt(rng.random(count)), rng.random(count)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
    points = np.einsum("nk,nkc->nc", bary, v[f[tri]])
    uv = np.einsum("nk,nkc->nc", bary, mesh.uv[mesh.faces_uv[tri]])
    th, tw = mesh.texture.shape[:2]
    tex = mesh.texture.astype(np.float32) / 255.0
    side = int(np.ceil(np.sqrt(count)))  # remap wants a 2-D map under 32767 per side
    pad = side * side - count
    mx = np.pad((uv[:, 0] * tw - 0.5).astype(np.float32), (0, pad)).reshape(side, side)
    my = np.pad(((1 - uv[:, 1]) * th - 0.5).astype(np.float32), (0, pad)).reshape(side, side)
    colors = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).reshape(-1, 3)[:count]
    return points, colors


class JamesTransfer:
    """Per-vertex ICT colours taken from the James scan; skin tone varied per sample."""

    def __init__(self, model: ict.IctModel, scan_path: str | Path, samples: int = 400_000) -> None:
        scan = meshes.load_mesh(scan_path)
        if scan.landmarks is None or len(scan.landmarks) != 68:
            raise DataError(f"{scan_path}: texture transfer needs 68 landmarks (NAME.ljson)")
        lm_scan = menpo_to_ibug(scan.landmarks) if Path(scan_path).with_suffix(".ljson").is_file() else scan.landmarks
        lm_ict = model.neutral[model.landmarks68].astype(np.float64)
        scale, rot, t = umeyama(lm_ict, lm_scan.astype(np.float64))
        moved = model.neutral.astype(np.float64) @ (scale * rot).T + t
        warp = RBFInterpolator(lm_ict @ (scale * rot).T + t, lm_scan - (lm_ict @ (scale * rot).T + t),
                               kernel="thin_plate_spline", smoothing=1.0)
        skin = np.isin(model.region, (ict.FACE, ict.HEAD_NECK))
        moved[skin] += warp(moved[skin])
        points, colors = sample_surface_colors(scan, samples, np.random.default_rng(0))
        dist, nearest = cKDTree(points).query(moved[skin])
        srgb = np.zeros((len(model.neutral), 3), np.float32)
        srgb[skin] = colors[nearest]
        # only vertices that land on the scan take its colour (ears, back of the head stay procedural)
        close = dist < 0.04 * float(np.ptp(lm_scan[:, 1]))
        self.valid = np.zeros(len(srgb), bool)
        self.valid[np.nonzero(skin)[0][close]] = True
        linear = albedo.srgb_to_linear(srgb)
        # white-balance the photo texture to a typical skin hue (it has a yellow-green cast), same luminance
        median = np.median(linear[self.valid], axis=0)
        hue = np.array([1.0, 0.52, 0.36], np.float32)
        lum = lambda c: 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]  # noqa: E731
        balance = hue * (lum(median) / lum(hue)) / np.maximum(median, 1e-4)
        self.colors = np.clip(linear * balance[None, :], 0, 1).astype(np.float32)
        self.skin = skin
        self.residual_mm = float(np.linalg.norm(lm_ict @ (scale * rot).T + t - lm_scan, axis=1).mean())

    @classmethod
    def from_folder(cls, folder: str | Path, model: ict.IctModel) -> JamesTransfer:
        folder = Path(folder)
        objs = sorted(folder.glob("*.obj"))
        if not objs:
            raise DataError(f"{folder}: no .obj scan to transfer a texture from")
        return cls(model, objs[0])

    def sample(self, layout: albedo.FaceLayout, rng: np.random.Generator,
               base: albedo.FaceAlbedo) -> albedo.FaceAlbedo:
        """Scan colours on the skin (tone-shifted half of the time), procedural eyes and mouth interior."""
        procedural = base.colors
        colors = self.colors.copy()
        gain = float(rng.uniform(0.45, 1.3)) if rng.random() < 0.5 else 1.0  # darker/lighter, same hue
        colors[self.valid] *= gain
        # procedural skin elsewhere, matched to the scan's median colour so that the seams do not show
        ratio = np.median(colors[self.valid], 0) / np.maximum(np.median(procedural[self.skin & ~self.valid], 0), 1e-4)
        fill = np.where((self.skin & ~self.valid)[:, None], procedural * ratio[None, :], procedural)
        out = np.where(self.valid[:, None], colors, fill)
        # the scan's own hair is painted on its scalp: no added hair volume
        return albedo.FaceAlbedo(np.clip(out, 0, 1).astype(np.float32), base.shininess,
                                 np.zeros(len(out), np.float32), {"albedo": "james-transfer", "gain": round(gain, 3)})
