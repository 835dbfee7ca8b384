"""The MediaPipe mesh prior: triangle list, landmark conversion, rasteriser (analytic cases), real MediaPipe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import Delaunay

from facenormals import mesh_prior, prior
from facenormals.conventions import angular_error_deg, sphere_normals
from facenormals.faces import mesh_to_pixels
from facenormals.geometry import face_crop


def ccw_triangulation(points_xy: np.ndarray) -> np.ndarray:
    """Delaunay triangles of points in our y-up frame, wound counter-clockwise (front faces)."""
    tri = Delaunay(points_xy).simplices.copy()
    a, b, c = (points_xy[tri[:, k]] for k in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri[cross < 0] = tri[cross < 0][:, ::-1]
    return tri


def brute_force_zbuffer(points: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Reference: per pixel, the nearest front triangle containing its centre, its smooth normal (NaN if none)."""
    normals_v = mesh_prior.vertex_normals(points, triangles)
    rows, cols = np.mgrid[0:size, 0:size].reshape(2, -1).astype(np.float64)
    best_depth = np.full(rows.size, -np.inf)
    out = np.full((rows.size, 3), np.nan)
    for tri in triangles:
        (c0, c1, c2), (r0, r1, r2) = points[tri, 0], -points[tri, 1]
        det = (c1 - c0) * (r2 - r0) - (c2 - c0) * (r1 - r0)
        if det >= -1e-9:
            continue  # back face or degenerate
        w1 = ((cols - c0) * (r2 - r0) - (c2 - c0) * (rows - r0)) / det
        w2 = ((c1 - c0) * (rows - r0) - (cols - c0) * (r1 - r0)) / det
        w0 = 1 - w1 - w2
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        depth = w0 * points[tri[0], 2] + w1 * points[tri[1], 2] + w2 * points[tri[2], 2]
        wins = inside & (depth > best_depth)
        best_depth[wins] = depth[wins]
        n = w0[wins, None] * normals_v[tri[0]] + w1[wins, None] * normals_v[tri[1]] + w2[wins, None] * normals_v[tri[2]]
        out[wins] = n / np.linalg.norm(n, axis=1, keepdims=True)
    return out.reshape(size, size, 3)


def test_shipped_triangles_match_the_installed_mediapipe() -> None:
    shipped = mesh_prior.mesh_triangles()
    assert shipped.shape == (852, 3)
    np.testing.assert_array_equal(shipped, mesh_prior.derive_tessellation_triangles())


def test_closed_mesh_keeps_only_the_outer_contour_and_a_consistent_winding() -> None:
    open_loops = mesh_prior.boundary_loops(mesh_prior.mesh_triangles())
    assert sorted(len(loop) for loop in open_loops) == [16, 16, 20, 36]  # eyes, mouth, face contour
    closed = mesh_prior.mesh_triangles(close_holes=True)
    assert [len(loop) for loop in mesh_prior.boundary_loops(closed)] == [36]
    directed = [(a, b) for t in closed for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))]
    assert len(set(directed)) == len(directed)  # every edge used once per direction: one orientation


def test_tilted_plane_gives_its_exact_normal() -> None:
    size = 64
    normal = np.array([0.3, -0.2, 0.9])
    normal /= np.linalg.norm(normal)
    xy = np.stack(np.meshgrid(np.linspace(5, 58, 6), -np.linspace(5, 58, 6)), axis=-1).reshape(-1, 2)
    z = -(normal[0] * xy[:, 0] + normal[1] * xy[:, 1]) / normal[2]  # n · p = 0
    points = np.column_stack([xy, z])
    normals, coverage = mesh_prior.rasterize_mesh_normals(points, ccw_triangulation(xy), size)
    assert coverage[10:54, 10:54].all() and not coverage[:4].any()
    err = angular_error_deg(normals[coverage], np.broadcast_to(normal, (coverage.sum(), 3)))
    assert err.max() < 0.01
    assert (normals[~coverage] == 0).all()


def test_sphere_landmarks_give_sphere_normals() -> None:
    size, radius_frac = 128, 0.45
    radius = radius_frac * size
    centre = (size - 1) / 2.0
    # vertices on a polar grid: dense rings, exactly on the sphere
    rings = [np.zeros((1, 2))]
    for r in np.linspace(0, 0.995, 25)[1:]:
        angles = np.linspace(0, 2 * np.pi, max(8, int(100 * r)), endpoint=False)
        rings.append(r * np.column_stack([np.cos(angles), np.sin(angles)]))
    unit = np.concatenate(rings)
    z = np.sqrt(1.0 - (unit**2).sum(axis=1))
    points = np.column_stack([centre + radius * unit[:, 0], -centre + radius * unit[:, 1], radius * z])
    normals, coverage = mesh_prior.rasterize_mesh_normals(points, ccw_triangulation(unit), size)
    expected, inside = sphere_normals(size, radius_frac)
    core = inside & (np.linalg.norm(np.stack(np.mgrid[0:size, 0:size]) - centre, axis=0) < 0.8 * radius)
    assert coverage[core].all()
    err = angular_error_deg(normals[core], expected[core])
    assert err.mean() < 1.0 and np.percentile(err, 99) < 2.0


def test_nearer_surface_wins_where_two_overlap() -> None:
    size = 64
    square = np.array([[8, -8], [56, -8], [56, -56], [8, -56]], dtype=np.float64)
    far = np.column_stack([square, np.full(4, -10.0)])  # facing +z
    near = np.column_stack([square * 0.5 + [16, -16], [20, 20, 10, 10]])  # tilted, nearer
    points = np.concatenate([near, far])
    quad = np.array([[0, 2, 1], [0, 3, 2]])  # clockwise in (col, row) = CCW in our frame
    triangles = np.concatenate([quad + 4, quad])  # the far quad listed last: order must not matter
    normals, coverage = mesh_prior.rasterize_mesh_normals(points, triangles, size)
    tilt = np.cross(near[2] - near[0], near[1] - near[0])  # corners 0, 2, 1 are the CCW order
    tilt /= np.linalg.norm(tilt)
    assert coverage[8:57, 8:57].all() and not coverage[:7].any()
    assert angular_error_deg(normals[32, 32], tilt) < 0.01
    assert angular_error_deg(normals[12, 12], np.array([0.0, 0.0, 1.0])) < 0.01


def frame_pixels(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return mesh_to_pixels(landmarks, shape[1], shape[0], np.float64)[0]


def test_landmarks_in_crop_signs_and_scale(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape))
    points = mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix)
    assert points.shape == (478, 3)
    np.testing.assert_allclose(points[:, 0], frame_pixels(landmarks, image.shape) @ crop.matrix[0, :2] + crop.matrix[0, 2])
    assert points[10, 1] > points[152, 1]  # forehead top above the chin: y is up
    assert points[4, 2] > points[234, 2]  # nose tip nearer the camera than the cheek edge
    scale = crop.matrix[0, 0]
    np.testing.assert_allclose(points[:, 2], -landmarks[:, 2] * image.shape[1] * scale)


def test_astronaut_mesh_normals_have_our_signs(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape))
    normals, coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix)
    points = mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix)

    def at(index: int) -> np.ndarray:
        col, row = round(points[index, 0]), round(-points[index, 1])
        assert coverage[row, col]
        return normals[row, col]

    assert at(151)[1] > 0.05  # forehead faces up
    assert at(152)[1] < -0.3  # chin faces down
    assert at(4)[2] > 0.8  # nose tip faces the camera
    assert at(280)[0] > 0.3 and at(50)[0] < -0.3  # image-right cheek faces right, image-left faces left
    # the mesh covers the facial hull, eyes and mouth included
    assert (coverage & crop.mask).sum() > 0.97 * crop.mask.sum()
    assert coverage[round(-points[468, 1]), round(points[468, 0])]  # an iris centre: eye closed over


def test_rasterisation_matches_a_per_pixel_zbuffer_on_a_turned_face(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    """Turn the face 50° so the nose hides part of the far eye and cheek: the nearest surface must win."""
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=64)
    points = mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix)
    centre = points[:468].mean(axis=0)
    angle = np.radians(50)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    turned = (points - centre) @ turn.T + centre
    triangles = mesh_prior.mesh_triangles(close_holes=True)
    normals, coverage = mesh_prior.rasterize_mesh_normals(turned, triangles, 64)
    reference = brute_force_zbuffer(turned, triangles, 64)
    np.testing.assert_array_equal(coverage, np.isfinite(reference[..., 0]))
    assert angular_error_deg(normals[coverage], reference[coverage].astype(np.float32)).max() < 0.01


def test_mesh_normals_for_crop_on_a_real_crop(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape))
    with mesh_prior.create_face_mesh() as face_mesh:
        normals, coverage, found = mesh_prior.mesh_normals_for_crop(crop.image, face_mesh)
    assert found and normals.shape == (256, 256, 3) and normals.dtype == np.float32
    from_frame, frame_coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix)
    both = coverage & frame_coverage
    assert both.sum() > 0.9 * frame_coverage.sum()
    assert np.median(angular_error_deg(normals[both], from_frame[both])) < 8.0  # two MediaPipe runs, one face


def test_a_missed_crop_is_looked_at_again_zoomed_out(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    """The zoomed-out second look (a face the tight crop hides from the mesh's detector, README "Coarse face")
    reads its landmarks back into the crop's own normalised coordinates: on a crop both views find, the two sets
    of landmarks are the same face (sub-pixel on average; two MediaPipe runs at two scales)."""
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape)).image
    side = crop.shape[0]
    with mesh_prior.create_face_mesh() as face_mesh:
        direct = mesh_prior.crop_landmarks(crop, face_mesh)
        zoomed = mesh_prior._zoomed_out_landmarks(crop, face_mesh)
    assert direct is not None and zoomed is not None and zoomed.shape == direct.shape
    offsets_px = np.abs(zoomed - direct) * side  # x, y and z (z is normalised by the width as x is)
    assert offsets_px[:, :2].mean() < 1.5 and np.median(offsets_px[:, 2]) < 2.0
    assert offsets_px[:, :2].max() < 6.0
    assert mesh_prior.CROP_ZOOM_OUT > 1  # the second look is on by default


def test_a_crop_with_no_face_in_either_view_stays_empty(rng: np.random.Generator) -> None:
    noise = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    with mesh_prior.create_face_mesh() as face_mesh:
        assert mesh_prior._zoomed_out_landmarks(noise, face_mesh) is None
        assert mesh_prior.crop_landmarks(noise, face_mesh) is None


def test_no_face_gives_the_empty_prior(rng: np.random.Generator) -> None:
    noise = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    with mesh_prior.create_face_mesh() as face_mesh:
        normals, coverage, found = mesh_prior.mesh_normals_for_crop(noise, face_mesh)
    assert not found and not coverage.any() and (normals == 0).all() and normals.shape == (128, 128, 3)


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="468 or 478"):
        mesh_prior.landmarks_in_crop(np.zeros((68, 3)), (256, 256), np.eye(2, 3))
    with pytest.raises(ValueError, match="out of range"):
        mesh_prior.rasterize_mesh_normals(np.zeros((3, 3)), np.array([[0, 1, 5]]), 32)
    with pytest.raises(ValueError, match="square RGB uint8"):
        mesh_prior.mesh_normals_for_crop(np.zeros((10, 20, 3), np.uint8), face_mesh=None)


@pytest.mark.parametrize("source", ["mediapipe-mesh", "ict-fit", "ict-blend"])
def test_data_prior_command_stores_landmarks_and_records_misses(astronaut_landmarks, tmp_path, rng, source) -> None:
    from facenormals.dataset import DatasetWriter
    from facenormals.training.data.prior_cli import compute_priors, read_index

    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=128)
    writer = DatasetWriter(tmp_path)
    writer.write("face", crop.mask, image=crop.image)
    writer.write("noise", crop.mask, image=rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    writer.write("geometry", crop.mask, normals=np.where(crop.mask[..., None], [0.0, 0.0, 1.0], 0.0).astype(np.float32))

    assert compute_priors(tmp_path) == (1, 1, 0)  # normal-only samples need no stored prior
    assert read_index(tmp_path) == {"face": True, "noise": False}
    normals, coverage = prior.stored_prior(tmp_path, "face", (128, 128, 3), source)
    assert (coverage & crop.mask).sum() > 0.9 * crop.mask.sum()
    assert normals[coverage][:, 2].mean() > 0.5
    empty_normals, empty_coverage = prior.stored_prior(tmp_path, "noise", (128, 128, 3), source)
    assert not empty_coverage.any() and not empty_normals.any()
    assert compute_priors(tmp_path) == (0, 0, 2)  # resumes: nothing recomputed


def test_data_prior_retry_missed_recomputes_only_the_recorded_misses(astronaut_landmarks, tmp_path, rng) -> None:
    """A folder whose index records a face as missed (made before the crop's second look): ``retry_missed``
    computes it again and leaves the faces already found alone."""
    from facenormals.dataset import DatasetWriter
    from facenormals.training.data.prior_cli import compute_priors, read_index, write_index

    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=128)
    writer = DatasetWriter(tmp_path)
    for name in ("found", "missed"):
        writer.write(name, crop.mask, image=crop.image)
    writer.write("noise", crop.mask, image=rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    assert compute_priors(tmp_path) == (2, 1, 0)
    stored = mesh_prior.stored_prior_path(tmp_path, "found")
    stamp = stored.stat().st_mtime_ns
    mesh_prior.stored_prior_path(tmp_path, "missed").unlink()
    write_index(tmp_path, {"found": True, "missed": False, "noise": False})  # as an older run left it

    assert compute_priors(tmp_path) == (0, 0, 3)  # a plain rerun trusts the index
    assert compute_priors(tmp_path, retry_missed=True) == (1, 1, 1)
    assert read_index(tmp_path) == {"found": True, "missed": True, "noise": False}
    assert stored.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.load(mesh_prior.stored_prior_path(tmp_path, "missed")), np.load(stored))


def test_prior_channels_for_a_batch_match_the_single_crop_call(astronaut_landmarks) -> None:
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=128)
    batch = np.stack([crop.to_tensor_array(), np.zeros((3, 128, 128), np.float32)])
    with mesh_prior.create_face_mesh() as face_mesh:
        channels = prior.prior_channels(batch, face_mesh, "mediapipe-mesh")
        normals, coverage, found = mesh_prior.mesh_normals_for_crop(crop.image, face_mesh)
    assert channels.shape == (2, 4, 128, 128) and found
    np.testing.assert_allclose(channels[0, :3], mesh_prior.fill_prior(normals, coverage).transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(channels[0, 3] > 0.5, coverage)
    assert not channels[1].any()  # a black crop: no face, the empty prior


def test_fill_prior_extends_the_nearest_mesh_normal() -> None:
    normals = np.zeros((32, 32, 3), np.float32)
    coverage = np.zeros((32, 32), bool)
    coverage[10:20, 5:15] = True
    normals[10:20, 5:10] = [0.0, 0.0, 1.0]
    normals[10:20, 10:15] = [0.6, 0.0, 0.8]
    filled = mesh_prior.fill_prior(normals, coverage)
    np.testing.assert_array_equal(filled[coverage], normals[coverage])
    np.testing.assert_allclose(filled[15, 31], [0.6, 0.0, 0.8])  # right of the patch: its right half
    np.testing.assert_allclose(filled[0, 0], [0.0, 0.0, 1.0])
    assert not mesh_prior.fill_prior(normals, np.zeros_like(coverage)).any()  # no mesh: stays empty


def test_realtime_batches_carry_the_prior_for_prior_models(astronaut_landmarks) -> None:
    """The realtime detector keeps MediaPipe's depth; the batcher adds the prior channels for 7-channel models."""
    from facenormals.crops import CropBatcher
    from facenormals.faces import FaceMeshDetector

    image, _ = astronaut_landmarks
    detector = FaceMeshDetector(max_faces=1, smoothing=None)
    try:
        faces = detector.detect(image, 0)
    finally:
        detector.close()
    assert len(faces) == 1 and faces[0].depth is not None and faces[0].depth.shape == (478,)
    rgb_only = CropBatcher(64, 1)(image, faces)
    with_prior = CropBatcher(64, 1, prior="mediapipe-mesh")(image, faces)
    assert rgb_only.inputs.shape == (1, 3, 64, 64) and with_prior.inputs.shape == (1, 7, 64, 64)
    np.testing.assert_array_equal(with_prior.inputs[:, :3], rgb_only.inputs)
    coverage = with_prior.inputs[0, 6] > 0.5
    mask = with_prior.crops[0].mask
    assert (coverage & mask).sum() > 0.95 * mask.sum()
    normals = with_prior.inputs[0, 3:6].transpose(1, 2, 0)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=2), 1.0, atol=1e-4)  # extended over the whole crop
    # the same prior as the offline path (tracking-mode and static-mode MediaPipe agree on this photo)
    landmarks_px = faces[0].landmarks
    points = mesh_prior.crop_points_from_pixels(landmarks_px, faces[0].depth, with_prior.crops[0].matrix)
    reference, ref_coverage = mesh_prior.rasterize_mesh_normals(points, mesh_prior.mesh_triangles(True), 64)
    assert angular_error_deg(normals[ref_coverage], reference[ref_coverage]).max() < 0.01


def test_prior_unit_scaling_matches_the_numpy_formula():
    """The prior's one-pass unit scaling gives the bytes of ``n / max(sqrt(Σ n²), 1e-6)`` (zeros stay zero)."""
    import cv2

    rng = np.random.default_rng(7)
    normals = cv2.GaussianBlur((rng.standard_normal((96, 96, 3)) * 2).astype(np.float32), (0, 0), 1.5)
    normals[:10] = 0.0
    length = np.sqrt(np.einsum("ijk,ijk->ij", normals, normals))
    expected = normals / np.maximum(length, 1e-6)[..., None]
    got = prior._unit(normals.copy())
    assert got.tobytes() == expected.tobytes()
    assert not got[:10].any()


def test_vertex_normals_normalise_exactly_like_numpy():
    """The in-place row normalisation gives the bytes of ``v / max(‖v‖, 1e-12)`` (isolated vertices stay zero)."""
    rng = np.random.default_rng(8)
    points = rng.standard_normal((40, 3)) * 10.0
    triangles = Delaunay(points[:, :2]).simplices.astype(np.int64)
    sums = np.zeros((len(points) + 1, 3))  # one vertex in no triangle
    mesh_prior._accumulate_face_normals(np.vstack([points, [[0.0, 0.0, 0.0]]]), triangles, sums)
    expected = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    got = mesh_prior.vertex_normals(np.vstack([points, [[0.0, 0.0, 0.0]]]), triangles)
    assert got.tobytes() == expected.tobytes()
    assert not got[-1].any()


def _fill_by_indexing(normals: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """The straightforward extension: a label → normal table by boolean indexing, then ``np.take``."""
    import cv2

    if not coverage.any():
        return np.zeros_like(normals, dtype=np.float32)
    if coverage.all():
        return normals.astype(np.float32, copy=True)
    _, labels = cv2.distanceTransformWithLabels((~coverage).astype(np.uint8), cv2.DIST_L2, 3,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    flat, covered = labels.reshape(-1), coverage.reshape(-1)
    table = np.zeros((int(flat.max()) + 1, 3), dtype=np.float32)
    table[flat[covered]] = normals.reshape(-1, 3)[covered]
    return np.take(table, labels, axis=0)


def test_fill_prior_equals_the_indexing_reference(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    """The fused label gather gives the table-and-take values bit for bit: random masks of every density (none, all
    included), odd sizes, and a real face mesh drawn on its crop."""
    rng = np.random.default_rng(5)
    for density in (0.0, 0.01, 0.3, 0.9, 1.0):
        height, width = rng.integers(3, 70, 2)
        normals = rng.normal(size=(height, width, 3)).astype(np.float32)
        coverage = rng.random((height, width)) < density
        np.testing.assert_array_equal(mesh_prior.fill_prior(normals, coverage), _fill_by_indexing(normals, coverage))
    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=128)
    normals, coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix, 128)
    assert 0.2 < coverage.mean() < 0.9
    np.testing.assert_array_equal(mesh_prior.fill_prior(normals, coverage), _fill_by_indexing(normals, coverage))


@pytest.mark.parametrize("source", ["ict-blend", "ict-fit", "mediapipe-mesh"])
def test_prior_input_equals_the_straightforward_prior(astronaut_landmarks: tuple[np.ndarray, np.ndarray], source: str) -> None:
    """The network's prior channels (fused blend, renormalisation and transpose) equal the step-by-step numpy
    computation bit for bit: ``coarse_prior`` (itself checked here against the unfused blend) transposed into the
    row, on a real face, a face half off the crop and a face off the crop (the empty prior)."""
    image, landmarks = astronaut_landmarks
    pixels = frame_pixels(landmarks, image.shape)
    depth = landmarks[:, 2] * image.shape[1]
    for shift in (0.0, 90.0, 2000.0):
        crop = face_crop(image, pixels, size=256)
        matrix = crop.matrix + np.array([[0.0, 0.0, shift], [0.0, 0.0, 0.0]])
        out, fit = prior.prior_input(pixels, depth, matrix, 256, source)
        points = mesh_prior.crop_points_from_pixels(pixels, depth, matrix)
        normals, coverage, _ = prior.coarse_prior(points, 256, source)
        np.testing.assert_array_equal(out[:3], normals.transpose(2, 0, 1))
        np.testing.assert_array_equal(out[3], coverage)
        assert (fit is None) == (source == "mediapipe-mesh")
        if source == "ict-blend" and shift < 1000:
            reference = _unfused_blend(points, 256)
            np.testing.assert_array_equal(normals, reference[0])
            np.testing.assert_array_equal(coverage, reference[1])
    assert not out.any()  # the last face is off the crop


def _unfused_blend(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``coarse_prior(points, size, "ict-blend")`` step by step in numpy (the computation before the fused kernels)."""
    import cv2

    from facenormals import ict_fit

    draw = prior.ICT_DRAW_PX
    face = ict_fit.load_ict_face()
    fit = ict_fit.fit_landmarks(points, face)
    fitted, coverage = prior.draw_ict(fit, face, size, draw)
    mesh, covered = mesh_prior.rasterize_mesh_normals(prior.resize_crop_points(points, size, draw),
                                                      mesh_prior.mesh_triangles(close_holes=True), draw)
    weight = prior.blend_ict_weight(fit.euler_deg()[0])
    fitted = fitted * np.float32(weight)
    fitted += np.float32(1.0 - weight) * _fill_by_indexing(mesh, covered)
    fitted = fitted / np.maximum(np.linalg.norm(fitted, axis=2, keepdims=True), np.float32(1e-6))
    normals = cv2.resize(fitted, (size, size), interpolation=cv2.INTER_LINEAR)
    normals = normals / np.maximum(np.linalg.norm(normals, axis=2, keepdims=True), np.float32(1e-6))
    return normals, cv2.resize(coverage.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) > 0.5


def test_rasterize_checked_with_int32_triangles_equals_rasterize_mesh(astronaut_landmarks: tuple[np.ndarray, np.ndarray]) -> None:
    """The prior's fast path (cached int32 triangles, no index check) draws exactly what the checked call draws."""
    from facenormals import ict_fit

    image, landmarks = astronaut_landmarks
    crop = face_crop(image, frame_pixels(landmarks, image.shape), size=128)
    points = mesh_prior.landmarks_in_crop(landmarks, image.shape, crop.matrix)
    face = ict_fit.load_ict_face()
    posed = ict_fit.fit_landmarks(points, face).crop_points(face)
    for vertices, triangles in ((points, mesh_prior.mesh_triangles(close_holes=True)), (posed, face.triangles)):
        expected = mesh_prior.rasterize_mesh(vertices, triangles, 128)
        assert expected[1].any()
        fast = mesh_prior.rasterize_checked(vertices, np.ascontiguousarray(triangles, dtype=np.int32), 128)
        for a, b in zip(fast, expected, strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="out of range"):
        mesh_prior.rasterize_mesh(points, np.array([[0, 1, 478]]), 128)
