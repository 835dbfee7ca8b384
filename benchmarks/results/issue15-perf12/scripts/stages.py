# ruff: noqa  (measurement scripts kept as run: the realtime shim import must come first)
"""Per sub-step timing of detect + crop on the sample clip (one thread): p50/min ms per step."""


def main() -> None:
    import time

    import numpy as np

    from facenormals import ict_fit, mesh_prior, prior
    from facenormals.faces import _normalised_faces, create_detector
    from facenormals.geometry import face_crop
    from facenormals.mesh_input import flatten_light
    from facenormals.realtime.sources.sample import render_sample_rgb

    det = create_detector(1)
    frames = [render_sample_rgb(i) for i in range(150)]
    T = {}
    def t(name, fn, *a, **k):
        t0 = time.perf_counter(); out = fn(*a, **k); T.setdefault(name, []).append((time.perf_counter() - t0) * 1e3); return out
    mesh = det._mesh
    prev = None
    face = ict_fit.load_ict_face()
    tris = mesh_prior.mesh_triangles(close_holes=True)
    for i, rgb in enumerate(frames):
        if i == 20: T.clear()
        flat = t("flatten", flatten_light, rgb)
        found = t("mp+normalised", _normalised_faces, mesh._mesh, flat)
        faces = t("_faces(smooth)", det._faces, [ __import__('facenormals.faces').faces.mesh_to_pixels(f, 640, 480)[0] for f in found], i*33_333_333, None, rgb)
        if not faces: continue
        f = faces[0]
        depth = found[0][:, 2] * np.float32(rgb.shape[1])
        crop = t("face_crop", face_crop, rgb, f.landmarks, 256)
        pts = t("crop_points_from_px", mesh_prior.crop_points_from_pixels, f.landmarks, depth, crop.matrix)
        fit = t("fit", ict_fit.fit_landmarks, pts, face, previous=prev); prev = fit
        cp = t("fit.crop_points", fit.crop_points, face)
        r = t("resize_pts", prior.resize_crop_points, cp, 256, 128)
        n, c = t("raster_ict", mesh_prior.rasterize_mesh_normals, r, face.triangles, 128)
        fl = t("fill_ict", mesh_prior.fill_prior, n, c)
        sm = t("smooth", prior._smooth, fl, 1.5)
        mr = prior.resize_crop_points(pts, 256, 128)
        mn, mc = t("raster_mesh", mesh_prior.rasterize_mesh_normals, mr, tris, 128)
        mf = t("fill_mesh", mesh_prior.fill_prior, mn, mc)
        def blend():
            sm2 = sm * prior.BLEND_ICT_WEIGHT; sm2 += (1 - prior.BLEND_ICT_WEIGHT) * mf; return prior._unit(sm2)
        b = t("blend", blend)
        nn, cc = t("to_crop", prior._to_crop, b, c, 256)
        out = np.empty((4, 256, 256), np.float32)
        def put(): out[:3] = nn.transpose(2, 0, 1); out[3] = cc
        t("put", put)
        row = np.empty((3, 256, 256), np.float32)
        t("rgb_row", np.multiply, crop.image.transpose(2, 0, 1), np.float32(1/255), out=row, casting="unsafe")
    tot = 0
    for k, v in T.items():
        print(f"{k:22s} p50 {np.median(v):6.3f} min {np.min(v):6.3f}  n={len(v)}")


if __name__ == "__main__":
    main()
