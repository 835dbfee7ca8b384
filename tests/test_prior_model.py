"""The mesh-prior model variants: shapes for both widths, the residual rotation, the no-mesh fallback, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from facenormals.checkpoint import load_checkpoint, load_image_to_normal, save_checkpoint
from facenormals.conventions import sphere_normals
from facenormals.model import ModelCfg, coarse_prior, create_model, rotate_from_prior, with_prior

SIZE = 64


def random_unit(n: int, generator: torch.Generator, front: bool = True) -> torch.Tensor:
    v = torch.randn(n, 3, SIZE, SIZE, generator=generator)
    if front:
        v[:, 2] = v[:, 2].abs() + 0.2
    return torch.nn.functional.normalize(v, dim=1)


def angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).clamp(-1, 1)
    return torch.rad2deg(torch.acos(cos))


@pytest.mark.parametrize(("arch", "prior"), [("fast", "absolute"), ("fast", "residual"), ("paper", "residual")])
def test_prior_variants_take_seven_channels_and_keep_every_path(arch: str, prior: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, "full", prior=prior).eval()
    assert model.cfg.in_chans == 7 and model.image_encoder.conv1.in_channels == 7
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, SIZE, SIZE, generator=g)
    x = with_prior(image, random_unit(2, g), torch.ones(2, 1, SIZE, SIZE))
    with torch.no_grad():
        normals = model.image_to_normal(x)
        assert normals.shape == (2, 3, SIZE, SIZE)
        assert torch.allclose(normals.norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-4)
        both, recon = model.image_to_normal_and_image(x)
        assert torch.allclose(both, normals, atol=1e-5)
        assert recon.shape == (2, 3, SIZE, SIZE)  # D_I reconstructs the RGB only
        assert model.image_to_image(x).shape == (2, 3, SIZE, SIZE)
        assert model.normal_to_normal(normals).shape == (2, 3, SIZE, SIZE)
        assert torch.allclose(model.image_to_normal_path(x), normals, atol=1e-5)


def test_prior_needs_seven_input_channels() -> None:
    with pytest.raises(ValueError, match="in_chans = 7"):
        ModelCfg(prior="residual", in_chans=3)
    with pytest.raises(ValueError, match="unknown prior"):
        ModelCfg(prior="mesh", in_chans=7)
    assert ModelCfg().prior == "none"  # RGB-only models are unchanged


def test_rotation_takes_z_to_the_prior_and_matches_rodrigues() -> None:
    g = torch.Generator().manual_seed(1)
    prior = random_unit(1, g)
    raw = random_unit(1, g, front=False) * 3.0
    z = torch.zeros(1, 3, SIZE, SIZE)
    z[:, 2] = 1.0
    assert torch.allclose(rotate_from_prior(z, prior), prior, atol=1e-5)
    out = rotate_from_prior(raw, prior)
    for row, col in ((0, 0), (17, 40), (63, 5)):
        p = prior[0, :, row, col].double().numpy()
        rotation, _ = Rotation.align_vectors([p], [[0.0, 0.0, 1.0]])
        # the minimal rotation: axis ⟂ both, so check it against the explicit one
        expected = rotation.apply(raw[0, :, row, col].double().numpy())
        np.testing.assert_allclose(out[0, :, row, col].double().numpy(), expected, atol=1e-4)
    assert torch.allclose(out.norm(dim=1), raw.norm(dim=1), atol=1e-4)  # a rotation keeps length
    assert torch.equal(rotate_from_prior(raw, torch.zeros_like(prior)), raw)  # no prior: identity


def test_residual_model_starts_at_the_prior() -> None:
    torch.manual_seed(0)
    model = create_model("fast", "full", prior="residual").eval()
    g = torch.Generator().manual_seed(2)
    prior = random_unit(1, g)
    with torch.no_grad():
        out = model.image_to_normal(with_prior(torch.rand(1, 3, SIZE, SIZE, generator=g), prior, torch.ones(1, 1, SIZE, SIZE)))
    assert angle_deg(out, prior).max() < 0.1  # at initialisation it is the mesh baseline (float32 acos: ~0.02°)


@pytest.mark.parametrize("prior", ["absolute", "residual"])
def test_no_mesh_fallback_runs_and_matches_explicit_zeros(prior: str) -> None:
    torch.manual_seed(0)
    model = create_model("fast", "full", prior=prior).eval()
    image = torch.rand(1, 3, SIZE, SIZE)
    fallback = with_prior(image)
    assert torch.equal(fallback[:, 3:], torch.zeros(1, 4, SIZE, SIZE))
    explicit = with_prior(image, torch.zeros(1, 3, SIZE, SIZE), torch.zeros(1, 1, SIZE, SIZE))
    assert torch.equal(fallback, explicit)
    with torch.no_grad():
        normals = model.image_to_normal(fallback)
    assert torch.isfinite(normals).all()
    assert torch.allclose(normals.norm(dim=1), torch.ones(1, SIZE, SIZE), atol=1e-4)
    with pytest.raises(ValueError, match="coverage"):
        with_prior(image, torch.ones(1, 3, SIZE, SIZE))


def test_coarse_prior_keeps_the_low_frequencies() -> None:
    normals, mask = sphere_normals(SIZE)
    t = torch.from_numpy(normals.transpose(2, 0, 1)[None].copy())
    smooth = coarse_prior(t, factor=8)
    assert torch.equal(smooth.norm(dim=1)[0] > 0.5, torch.from_numpy(mask))
    err = angle_deg(smooth, t)[0][torch.from_numpy(mask)]
    assert 0.5 < err.median() < 8.0  # smoothed, not copied, yet the same shape
    assert (smooth[0, :, ~torch.from_numpy(mask)] == 0).all()


def test_prior_config_survives_checkpoints(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("fast", "full", prior="residual").eval()
    path = tmp_path / "prior.safetensors"
    save_checkpoint(model, path)
    x = with_prior(torch.rand(1, 3, SIZE, SIZE), random_unit(1, torch.Generator().manual_seed(3)),
                   torch.ones(1, 1, SIZE, SIZE))
    reloaded, path_only = load_checkpoint(path), load_image_to_normal(path)
    assert reloaded.cfg.prior == "residual" and path_only.cfg.in_chans == 7
    with torch.no_grad():
        assert torch.allclose(path_only(x), model.image_to_normal(x), atol=1e-5)


def test_training_feeds_the_stored_mesh_prior(tmp_path) -> None:
    """A residual prior model trains end to end on a real face crop whose prior MediaPipe computed."""
    skimage_data = pytest.importorskip("skimage.data")
    from facenormals import mesh_prior
    from facenormals.checkpoint import read_config
    from facenormals.dataset import DatasetWriter, scan_dataset
    from facenormals.geometry import face_crop
    from facenormals.training.config import config_from_dict
    from facenormals.training.data.prior_cli import compute_priors
    from facenormals.training.loaders import load_item
    from facenormals.training.trainer import train

    image = skimage_data.astronaut()
    with mesh_prior.create_face_mesh() as face_mesh:
        found = face_mesh.find(image)[0]
    landmarks, xy = found.normalised.astype(np.float64), found.points
    crop = face_crop(image, xy, size=128)
    truth, coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix, 128)
    root = tmp_path / "data"
    writer = DatasetWriter(root, normal_format="npy")
    writer.write("face", coverage, image=crop.image, normals=truth)
    writer.write("shape", coverage, normals=truth)  # normal-only: its prior is the smoothed input, in the model
    cfg = config_from_dict({
        "run_dir": str(tmp_path / "run"), "threads": 1, "val_every": 0, "checkpoint_every_s": 1e9,
        "model": {"arch": "fast", "variant": "full", "prior": "residual"},
        "data": {"train": [str(root)], "val": [str(root)], "mix": {"paired": 1.0, "normal-only": 1.0}},
        "phases": [{"steps": 3, "size": 64, "batch_size": 1}],
    })
    with pytest.raises(ValueError, match="facenormals data prior --in"):
        train(cfg)  # no stored priors yet: not a silent run on the no-mesh fallback
    compute_priors(root)

    item = load_item(next(s for s in scan_dataset(root) if s.name == "face"), 64, None, None, prior="mediapipe-mesh")
    assert item["prior"].shape == (4, 64, 64)
    covered = item["prior"][3] > 0.5
    assert covered.mean() > 0.3
    cos = (item["prior"][:3] * item["normals"]).sum(axis=0)[covered & (item["mask"][0] > 0.5)]
    assert np.median(cos) > 0.95  # MediaPipe on the crop ≈ MediaPipe on the photo

    result = train(cfg)
    assert result.steps == 3 and result.best_val_deg is not None and np.isfinite(result.best_val_deg)
    assert read_config(tmp_path / "run" / "best.safetensors").prior == "residual"


def test_onnx_export_takes_the_prior_channels_with_parity(tmp_path) -> None:
    """The exported prior model has one 7-channel input; ONNX Runtime matches torch on a real crop + its mesh prior."""
    skimage_data = pytest.importorskip("skimage.data")
    import onnxruntime as ort

    from facenormals import mesh_prior
    from facenormals.export.onnx_export import build_onnx
    from facenormals.geometry import face_crop

    torch.manual_seed(0)
    model = create_model("fast", "full", prior="residual").eval()
    checkpoint = tmp_path / "prior.safetensors"
    save_checkpoint(model, checkpoint)
    onnx_model, _ = build_onnx(checkpoint, size=SIZE)
    dims = [d.dim_value for d in onnx_model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [7, SIZE, SIZE]
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    assert meta["prior"] == "residual" and meta["in_chans"] == "7"

    image = skimage_data.astronaut()
    with mesh_prior.create_face_mesh() as face_mesh:
        found = face_mesh.find(image)[0]
    landmarks, xy = found.normalised.astype(np.float64), found.points
    crop = face_crop(image, xy, size=SIZE)
    normals, coverage = mesh_prior.mesh_normals_from_landmarks(landmarks, image.shape, crop.matrix, SIZE)
    normals = mesh_prior.fill_prior(normals, coverage)
    x = with_prior(torch.from_numpy(crop.to_tensor_array()[None]), torch.from_numpy(normals.transpose(2, 0, 1)[None]),
                   torch.from_numpy(coverage[None, None].astype(np.float32)))
    fallback = with_prior(torch.from_numpy(crop.to_tensor_array()[None]))
    session = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    for inputs in (x, fallback):
        ours = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
        with torch.no_grad():
            reference = model.image_to_normal(inputs)
        assert angle_deg(torch.from_numpy(ours), reference).max() < 0.1

    # `facenormals eval` on the ONNX file: it reads the 'prior' metadata and adds MediaPipe's prior itself
    from facenormals.training.evaluation import load_predictor, torch_predictor

    onnx_path = tmp_path / "prior.onnx"
    onnx_path.write_bytes(onnx_model.SerializeToString())
    rgb = crop.to_tensor_array()[None]
    from_onnx = load_predictor(onnx_path)(rgb)
    from_torch = torch_predictor(model.image_to_normal_path)(rgb)
    assert angle_deg(torch.from_numpy(from_onnx), torch.from_numpy(from_torch)).max() < 0.1
