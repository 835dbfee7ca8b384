"""Distillation (issue 15): a student follows a frozen teacher's normals on every step with an image, or only on
the real photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facenormals.checkpoint import save_checkpoint
from facenormals.mirror_average import mirror_averaged
from facenormals.model import create_model
from facenormals.training.config import config_from_dict, load_config
from facenormals.training.distill import DistillSection, load_teacher
from facenormals.training.losses import masked_cosine_distance
from facenormals.training.schedule import StepKind, StepLosses, image_input

SIZE = 64
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def _batch(n: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    prior = torch.nn.functional.normalize(torch.rand(n, 3, SIZE, SIZE, generator=g) + torch.tensor([0, 0, 1.0])[:, None, None],
                                          dim=1)
    mask = torch.zeros(n, 1, SIZE, SIZE)
    mask[..., 10:54, 14:50] = 1
    normals = torch.nn.functional.normalize(torch.rand(n, 3, SIZE, SIZE, generator=g) - 0.5, dim=1)
    return {"image": torch.rand(n, 3, SIZE, SIZE, generator=g), "normals": normals, "mask": mask,
            "prior": torch.cat([prior, torch.ones(n, 1, SIZE, SIZE)], dim=1)}


def _moved(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A residual model whose output is not just its prior (the fresh last layer is zero)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        model.normal_decoder.last.weight.normal_(std=0.2)
    return model


def test_off_by_default_and_needs_a_teacher():
    assert config_from_dict({"phases": [{"steps": 1}]}).distill.weight == 0
    with pytest.raises(ValueError, match=r"needs distill\.teacher"):
        DistillSection(weight=1.0)
    with pytest.raises(ValueError, match="≥ 0"):
        DistillSection(teacher="x", weight=-1.0)


@pytest.mark.parametrize("kind", [StepKind.IMAGE_TO_IMAGE, StepKind.IMAGE_TO_NORMAL_AND_IMAGE])
def test_every_image_step_gets_the_teachers_normals(tmp_path, kind):
    """The term is the masked cosine distance to the frozen teacher; it trains the student, never the teacher."""
    teacher_net = _moved(create_model("fast", "full", prior="residual"), 1)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher_net, path, inference_only=True)
    student = _moved(create_model("lite", "full", prior="residual"), 2)
    teacher = load_teacher(DistillSection(teacher=str(path), weight=0.5), student.cfg, torch.device("cpu"))
    batch = _batch()
    plain_loss, plain_terms = StepLosses(student)(kind, batch)
    loss, terms = StepLosses(student, teacher=teacher, distill_weight=0.5)(kind, batch)
    assert set(terms) == {*plain_terms, "distill"}
    with torch.no_grad():
        expected = masked_cosine_distance(student.image_to_normal(image_input(batch)),
                                          teacher_net.eval().image_to_normal(image_input(batch)), batch["mask"])
    assert float(terms["distill"]) == pytest.approx(float(expected), rel=1e-4) and float(expected) > 1e-3
    assert float(loss.detach()) == pytest.approx(float(plain_loss.detach()) + 0.5 * float(expected), rel=1e-4)
    loss.backward()
    assert float(student.normal_decoder.last.weight.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any(k.startswith("_teacher") for k in StepLosses(student, teacher=teacher, distill_weight=0.5).state_dict())


def test_normal_only_steps_and_a_teacher_equal_to_the_student(tmp_path):
    student = _moved(create_model("fast", "full", prior="residual"), 3)
    path = tmp_path / "same.safetensors"
    save_checkpoint(student, path)
    teacher = load_teacher(DistillSection(teacher=str(path), weight=1.0), student.cfg, torch.device("cpu"))
    losses = StepLosses(student.eval(), teacher=teacher, distill_weight=1.0)
    assert "distill" not in losses(StepKind.NORMAL_TO_NORMAL, _batch())[1]  # no image: nothing to distil
    assert float(losses(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, _batch())[1]["distill"]) < 1e-5


def test_real_photos_only_distils_the_image_only_steps(tmp_path):
    """With ``real_photos_only`` the unlabelled real photos (image→image steps) follow the teacher and the labelled
    steps keep their plain loss, in the trainer's config as in the step."""
    teacher_net = _moved(create_model("fast", "full", prior="residual"), 1)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher_net, path, inference_only=True)
    student = _moved(create_model("fast", "no-normal-encoder", prior="residual"), 2)
    section = config_from_dict({"phases": [{"steps": 1}],
                                "distill": {"teacher": str(path), "weight": 2.0, "real_photos_only": True}}).distill
    teacher = load_teacher(section, student.cfg, torch.device("cpu"))
    losses = StepLosses(student, teacher=teacher, distill_weight=section.weight, distill_real_only=section.real_photos_only)
    batch = _batch()
    labelled_loss, labelled_terms = losses(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
    plain_loss, plain_terms = StepLosses(student)(StepKind.IMAGE_TO_NORMAL_AND_IMAGE, batch)
    assert labelled_terms.keys() == plain_terms.keys()
    assert float(labelled_loss) == pytest.approx(float(plain_loss), rel=1e-6)
    real_loss, real_terms = losses(StepKind.IMAGE_TO_IMAGE, batch)
    assert float(real_terms["distill"]) > 1e-3
    assert float(real_loss) == pytest.approx(float(real_terms["i2i"]) + 2.0 * float(real_terms["distill"]), rel=1e-4)


def test_a_mirrored_teacher_answers_as_the_api(tmp_path):
    """With ``mirror`` the target is the teacher's mirror-averaged output, exactly the API's (numpy) mirror pass, and
    not its one pass."""
    teacher_net = _moved(create_model("fast", "full", prior="residual"), 5)
    path = tmp_path / "teacher.safetensors"
    save_checkpoint(teacher_net, path, inference_only=True)
    student = create_model("lite", "full", prior="residual")
    section = config_from_dict({"phases": [{"steps": 1}],
                                "distill": {"teacher": str(path), "weight": 1.0, "mirror": True}}).distill
    teacher = load_teacher(section, student.cfg, torch.device("cpu"))
    one_pass = load_teacher(DistillSection(teacher=str(path), weight=1.0), student.cfg, torch.device("cpu"))
    inputs = image_input(_batch())
    with torch.no_grad():
        target = teacher(inputs).numpy()
        single = one_pass(inputs).numpy()
    api = mirror_averaged(lambda batch: one_pass(torch.from_numpy(batch)).detach().numpy())(inputs.numpy())
    assert abs(target - api).max() < 1e-5
    assert abs(target - single).max() > 1e-2
    assert all(not p.requires_grad for p in teacher.parameters())


def test_a_list_of_teachers_answers_with_their_renormalised_mean(tmp_path):
    """A TOML list of teachers is their ensemble: each member's (mirror-averaged) normals summed with their weights
    and renormalised, which is neither member's answer."""
    paths = []
    for seed in (5, 6):
        paths.append(tmp_path / f"teacher{seed}.safetensors")
        save_checkpoint(_moved(create_model("fast", "full", prior="residual"), seed), paths[-1], inference_only=True)
    student = create_model("lite", "full", prior="residual")
    section = config_from_dict({"phases": [{"steps": 1}], "distill": {
        "teacher": [str(p) for p in paths], "teacher_weights": [1.0, 2.5], "weight": 1.0, "mirror": True}}).distill
    ensemble = load_teacher(section, student.cfg, torch.device("cpu"))
    members = [load_teacher(DistillSection(teacher=str(p), weight=1.0, mirror=True), student.cfg, torch.device("cpu"))
               for p in paths]
    inputs = image_input(_batch())
    with torch.no_grad():
        target = ensemble(inputs)
        answers = [member(inputs) for member in members]
    expected = torch.nn.functional.normalize(answers[0] + 2.5 * answers[1], dim=1)
    assert (target - expected).abs().max() < 1e-5
    assert min((target - answer).abs().max() for answer in answers) > 1e-2
    assert all(not p.requires_grad for p in ensemble.parameters())
    with pytest.raises(ValueError, match=r"one weight > 0 per teacher \(2\), got \[1\.0\]"):
        DistillSection(teacher=tuple(str(p) for p in paths), teacher_weights=(1.0,), weight=1.0)
    with pytest.raises(FileNotFoundError, match=r"distill\.teacher not found: .*none"):
        load_teacher(DistillSection(teacher=(str(paths[0]), str(tmp_path / "none.safetensors")), weight=1.0),
                     student.cfg, torch.device("cpu"))


def test_teacher_must_take_the_students_input(tmp_path):
    rgb = tmp_path / "rgb.safetensors"
    save_checkpoint(create_model("fast"), rgb)
    student = create_model("lite", "full", prior="residual")
    with pytest.raises(ValueError, match="the student takes 7"):
        load_teacher(DistillSection(teacher=str(rgb), weight=1.0), student.cfg, torch.device("cpu"))
    with pytest.raises(FileNotFoundError, match=r"distill\.teacher not found"):
        load_teacher(DistillSection(teacher=str(tmp_path / "none.safetensors"), weight=1.0), student.cfg,
                     torch.device("cpu"))
    assert load_teacher(DistillSection(), student.cfg, torch.device("cpu")) is None


def test_lite_d1_config_reads():
    cfg = load_config(CONFIGS / "lite_d1.toml")
    assert cfg.model.arch == "lite" and cfg.model.prior == "residual" and cfg.threads == 1
    assert cfg.distill.weight > 0 and cfg.distill.teacher.endswith("fast-prior.safetensors")
    c8 = load_config(CONFIGS / "ict_prior_c8.toml")
    assert cfg.data.train == c8.data.train and cfg.data.val == c8.data.val
