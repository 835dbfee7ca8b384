import pytest
import torch

from facenormals.complexity import count_gmac
from facenormals.model import ImageToNormal, create_model
from facenormals.model_config import VARIANTS, WIDTHS

SIZE = 64


@pytest.mark.parametrize("arch", sorted(WIDTHS))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_shapes_every_variant(arch, variant):
    torch.manual_seed(0)
    model = create_model(arch, variant).eval()
    image = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        normals = model.image_to_normal(image)
        assert normals.shape == (2, 3, SIZE, SIZE)
        assert torch.allclose(normals.norm(dim=1), torch.ones(2, SIZE, SIZE), atol=1e-4)
        if model.image_decoder is not None:
            assert model.image_to_image(image).shape == (2, 3, SIZE, SIZE)
        if model.normal_encoder is not None:
            assert model.normal_to_normal(normals).shape == (2, 3, SIZE, SIZE)
    assert (model.normal_encoder is not None) == VARIANTS[variant][0]
    assert (model.skip_connections is not None) == VARIANTS[variant][2]


def test_inactive_skips_ignore_encoder_features():
    torch.manual_seed(0)
    model = create_model("fast").eval()
    latent = torch.rand(1, 512, 2, 2)
    skips_a = model.skip_connections(model.image_encoder(torch.rand(1, 3, SIZE, SIZE)))
    skips_b = [s * 0 + 100 for s in skips_a]
    decoder = model.normal_decoder
    with torch.no_grad():
        inactive = decoder(latent, None)
        active_a, active_b = decoder(latent, skips_a), decoder(latent, skips_b)
    assert not torch.allclose(active_a, active_b)  # active: the skips matter
    assert not torch.allclose(inactive, active_b)
    # normal→normal never sees E_I: perturbing E_I weights leaves it unchanged
    normals = torch.nn.functional.normalize(torch.rand(1, 3, SIZE, SIZE), dim=1)
    with torch.no_grad():
        before = model.normal_to_normal(normals)
        for p in model.image_encoder.parameters():
            p.add_(1.0)
        for p in model.skip_connections.parameters():
            p.add_(1.0)
        after = model.normal_to_normal(normals)
    assert torch.equal(before, after)


def test_active_skips_carry_gradient_to_image_encoder():
    torch.manual_seed(0)
    model = create_model("fast").train()
    model.image_to_normal(torch.rand(2, 3, SIZE, SIZE)).sum().backward()
    first = model.image_encoder.full_res[0][0].weight.grad  # only reachable through the full-resolution skip
    stem = model.image_encoder.conv1.weight.grad
    assert first is not None and first.abs().sum() > 0
    assert stem is not None and stem.abs().sum() > 0
    assert all(p.grad is None for p in model.normal_encoder.parameters())
    assert all(p.grad is None for p in model.image_decoder.parameters())


def test_max_merge_touches_only_last_channels():
    from facenormals.model import max_merge
    x = torch.zeros(1, 5, 2, 2)
    merged = max_merge(x, torch.ones(1, 2, 2, 2))
    assert merged[:, :3].abs().sum() == 0 and torch.all(merged[:, 3:] == 1)


def test_image_to_normal_path_holds_no_image_decoder_or_normal_encoder():
    model = create_model("fast")
    path = model.image_to_normal_path
    assert isinstance(path, ImageToNormal)
    names = {name.split(".")[0] for name, _ in path.named_parameters()}
    assert names == {"image_encoder", "skip_connections", "normal_decoder"}


def test_fast_is_under_a_quarter_of_paper_macs():
    image = torch.rand(1, 3, 256, 256)
    paper = create_model("paper").eval().image_to_normal_path
    fast = create_model("fast").eval().image_to_normal_path
    assert count_gmac(lambda: fast(image)) <= count_gmac(lambda: paper(image)) / 4


def test_paper_latent_is_512x8x8_at_256():
    model = create_model("paper").eval()
    with torch.no_grad():
        latent = model.image_encoder(torch.rand(1, 3, 256, 256))[-1]
    assert latent.shape == (1, 512, 8, 8)


def test_unknown_names_fail_loudly():
    with pytest.raises(ValueError, match="unknown arch"):
        create_model("huge")
    with pytest.raises(ValueError, match="unknown variant"):
        create_model("fast", "half-skip")
    with pytest.raises(TypeError):
        create_model("fast", wings=3)
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("fast", input_size=100)
