"""Initialise a narrower network from a wider one by keeping its strongest channels (issue 15's "lite" network).

Every channel axis of the network is made of *groups*: the channels one conv writes and the next ones read.
Channels joined by a residual add (a ResNet stage's blocks and its downsample) form one group, so the adds stay
consistent; both encoders' last stage is one group (``latent``) because both decoders read either. A decoder
stage's input is two groups side by side: the free channels and the last m that the max-merge overwrites (the
skip adapter's output is that second group). Each group keeps, in order, the channels whose writers have the
largest L1 norm (BN-folded: |γ|/σ · Σ|W|, summed over the convs writing the group), and every conv, bias and BN
is sliced on both axes. A student with the teacher's widths keeps every channel: the teacher, unchanged.

Parts the student lacks (the full-resolution branch and stage of "lite") are dropped; a conv whose axes differ
from the teacher's (lite's output conv reads H/2 features, the teacher's full-resolution ones) keeps the student's
initialisation: a residual-prior student then starts exactly at the prior.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from facenormals.checkpoint import INFERENCE_PREFIXES, is_inference_only, load_network, read_config
from facenormals.model import CrossModalNet

INPUT = ""  # the input image or normals (or the 3 output channels): kept whole


@dataclass(frozen=True)
class ConvSlice:
    """A conv (prefix of ``.weight``/``.bias``), the BN after it (or None), and the groups on each axis."""

    conv: str
    bn: str | None
    out: tuple[str, ...]
    inp: tuple[str, ...]


def _encoder(prefix: str, full_res: bool) -> list[ConvSlice]:
    """ResNet-18: stream s1 (stem and layer1, joined by layer1's identity adds), s2, s3, latent; inner convs apart."""
    streams = {0: f"{prefix}s1", 1: f"{prefix}s1", 2: f"{prefix}s2", 3: f"{prefix}s3", 4: "latent"}
    convs = [ConvSlice(f"{prefix}conv1", f"{prefix}bn1", (streams[0],), (INPUT,))]
    if full_res:  # its output is the full-resolution skip itself
        convs += [ConvSlice(f"{prefix}full_res.0.0", None, ("skip4",), (INPUT,)),
                  ConvSlice(f"{prefix}full_res.1.0", None, ("skip4",), ("skip4",))]
    for layer in range(1, 5):
        for block in range(2):
            name, mid = f"{prefix}layer{layer}.{block}", f"{prefix}layer{layer}.{block}.mid"
            inp = streams[layer - 1] if block == 0 else streams[layer]
            convs += [ConvSlice(f"{name}.conv1", f"{name}.bn1", (mid,), (inp,)),
                      ConvSlice(f"{name}.conv2", f"{name}.bn2", (streams[layer],), (mid,))]
            if block == 0 and layer > 1:
                convs.append(ConvSlice(f"{name}.downsample.0", f"{name}.downsample.1", (streams[layer],), (inp,)))
    return convs


def _decoder(prefix: str, has_latent_proj: bool, stages: int, skips: bool) -> list[ConvSlice]:
    """Stage i's input is (free_i, skip_i) with skips, (free_i,) without; the head's output feeds ``last``."""
    def stage_input(i: int) -> tuple[str, ...]:
        return (f"{prefix}free{i}", f"skip{i}") if skips else (f"{prefix}free{i}",)

    convs, inp = [], ("latent",)
    if has_latent_proj:
        convs.append(ConvSlice(f"{prefix}latent_proj.0", None, stage_input(0), inp))
        inp = stage_input(0)
    for i in range(stages):
        out = stage_input(i + 1) if i < 4 else (f"{prefix}head",)
        convs.append(ConvSlice(f"{prefix}blocks.{i}.0", None, out, inp))
        inp = out
    return [*convs, ConvSlice(f"{prefix}last", None, (INPUT,), inp)]


def network_convs(model: CrossModalNet) -> list[ConvSlice]:
    """Every conv of ``model`` with the channel groups of its output and input."""
    skips = model.skip_connections is not None
    convs = _encoder("image_encoder.", model.image_encoder.full_res is not None)
    if skips:  # layer0, layer1 read s1; layer2, layer3 read s2, s3; they write skips 3..0
        reads = ("s1", "s1", "s2", "s3")
        convs += [ConvSlice(f"skip_connections.convs.{k}.0", None, (f"skip{3 - k}",), (f"image_encoder.{reads[k]}",))
                  for k in range(4)]
    decoder = model.normal_decoder
    convs += _decoder("normal_decoder.", decoder.latent_proj is not None, len(decoder.blocks), skips)
    if model.normal_encoder is not None:
        convs += _encoder("normal_encoder.", False)
    if model.image_decoder is not None:
        convs += _decoder("image_decoder.", model.image_decoder.latent_proj is not None,
                          len(model.image_decoder.blocks), False)
    return convs


def _group_sizes(convs: list[ConvSlice], state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Channels of each group, from the weight shapes (a composite axis's one unknown group is the remainder)."""
    sizes: dict[str, int] = {INPUT: -1}
    axes = [(c.out, state[f"{c.conv}.weight"].shape[0]) for c in convs]
    axes += [(c.inp, state[f"{c.conv}.weight"].shape[1]) for c in convs]

    def resolve() -> None:  # until no axis has exactly one unknown group left
        found = True
        while found:
            found = False
            for groups, total in axes:
                unknown = [g for g in groups if g not in sizes]
                if len(unknown) == 1:
                    sizes[unknown[0]] = total - sum(sizes[g] for g in groups if g != unknown[0])
                    found = True

    resolve()
    if "skip4" not in sizes:  # no full-resolution branch: an empty fifth skip, which may resolve the rest
        sizes["skip4"] = 0
        resolve()
    return sizes


def _channel_scores(convs: list[ConvSlice], state: dict[str, torch.Tensor],
                    sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """Per group, the BN-folded L1 norm of every channel's filters, summed over the convs that write it."""
    scores: dict[str, torch.Tensor] = {}
    for c in convs:
        weight = state[f"{c.conv}.weight"].float()
        l1 = weight.abs().flatten(1).sum(dim=1)
        if c.bn is not None:
            l1 = l1 * state[f"{c.bn}.weight"].float().abs() / (state[f"{c.bn}.running_var"].float() + 1e-5).sqrt()
        start = 0
        for group in c.out:
            if group != INPUT:
                n = sizes[group]
                scores[group] = scores.get(group, 0) + l1[start:start + n]
                start += n
    return scores


def _axis_index(groups: tuple[str, ...], keep: dict[str, torch.Tensor], teacher_sizes: dict[str, int],
                full: int) -> torch.Tensor:
    """The teacher's channel indices for a student axis made of ``groups``."""
    if groups == (INPUT,):
        return torch.arange(full)
    parts, offset = [], 0
    for group in groups:
        parts.append(offset + keep[group])
        offset += teacher_sizes[group]
    return torch.cat(parts)


def prune_state(teacher: CrossModalNet, student: CrossModalNet,
                parts: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """The student's state dict with every conv/BN the teacher also has sliced from the teacher's strongest channels.

    ``parts``: the teacher's modules that hold trained weights (e.g. only the image→normal path of an
    inference-only checkpoint); the others neither score channels nor are copied.
    """
    t_state, s_state = teacher.state_dict(), student.state_dict()
    t_convs = {c.conv: c for c in network_convs(teacher) if parts is None or c.conv.startswith(parts)}
    s_convs = network_convs(student)
    t_sizes, s_sizes = _group_sizes(list(t_convs.values()), t_state), _group_sizes(s_convs, s_state)
    scores = _channel_scores(list(t_convs.values()), t_state, t_sizes)
    keep = {}
    for group, n in s_sizes.items():
        if group == INPUT or group not in t_sizes:
            continue
        if n > t_sizes[group]:
            raise ValueError(f"prune: the student's {group} has {n} channels, the teacher only {t_sizes.get(group, 0)}")
        keep[group] = torch.sort(torch.topk(scores[group], n).indices).values if n else torch.zeros(0, dtype=torch.long)
    out = dict(s_state)
    for c in s_convs:
        t = t_convs.get(c.conv)
        if t is None or t.out != c.out or t.inp != c.inp:
            continue  # a part the teacher lacks or wires differently: the student's own initialisation
        weight = t_state[f"{c.conv}.weight"]
        rows = _axis_index(c.out, keep, t_sizes, weight.shape[0])
        cols = _axis_index(c.inp, keep, t_sizes, weight.shape[1])
        out[f"{c.conv}.weight"] = weight[rows][:, cols].clone()
        if f"{c.conv}.bias" in t_state:
            out[f"{c.conv}.bias"] = t_state[f"{c.conv}.bias"][rows].clone()
        if c.bn is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                out[f"{c.bn}.{name}"] = t_state[f"{c.bn}.{name}"][rows].clone()
            out[f"{c.bn}.num_batches_tracked"] = t_state[f"{c.bn}.num_batches_tracked"].clone()
    return out


def prune_into(teacher: CrossModalNet, student: CrossModalNet, parts: tuple[str, ...] | None = None) -> CrossModalNet:
    """Load :func:`prune_state` into ``student`` (strictly: every tensor keeps the student's shape); returns it."""
    if teacher.cfg.in_chans != student.cfg.in_chans or teacher.cfg.prior != student.cfg.prior:
        raise ValueError(f"prune: teacher and student must take the same input (in_chans {teacher.cfg.in_chans} vs "
                         f"{student.cfg.in_chans}, prior {teacher.cfg.prior!r} vs {student.cfg.prior!r})")
    student.load_state_dict(prune_state(teacher, student, parts), strict=True)
    return student


def prune_checkpoint(path: str | Path, arch: str) -> CrossModalNet:
    """A new ``arch`` network (the checkpoint's input and prior) initialised from the checkpoint's strongest channels.

    An inference-only checkpoint (the shipped ``fast-prior``) initialises E_I, the skips, D_N and E_N (as
    :func:`facenormals.checkpoint.load_network` fills it); D_I starts fresh.
    """
    cfg = read_config(path)
    teacher = load_network(path)  # an inference-only file: E_N copied from E_I's trunk, D_I fresh (not copied)
    parts = (*INFERENCE_PREFIXES, "normal_encoder.") if is_inference_only(path) else None
    student = CrossModalNet(replace(cfg, arch=arch, extra={**cfg.extra, "pruned_from": str(path)}))
    return prune_into(teacher.eval(), student, parts)


def main(argv: list[str] | None = None) -> int:
    """``python -m facenormals.prune SRC --arch lite --out DST``: a full checkpoint to start training from."""
    import argparse

    from facenormals.checkpoint import save_checkpoint

    parser = argparse.ArgumentParser(prog="python -m facenormals.prune", description=main.__doc__)
    parser.add_argument("source", help="the wider checkpoint (full or inference-only)")
    parser.add_argument("--arch", required=True, help="the narrower architecture (facenormals.model_config.WIDTHS)")
    parser.add_argument("--out", required=True, help="the new checkpoint (refuses to overwrite the source)")
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == Path(args.source).resolve():
        raise SystemExit(f"--out {args.out} is the source checkpoint: refusing to overwrite it")
    model = prune_checkpoint(args.source, args.arch)
    save_checkpoint(model, args.out, provenance={"pruned_from": str(args.source), "arch": args.arch})
    print(f"wrote {args.out}: {args.arch} from the strongest channels of {args.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
