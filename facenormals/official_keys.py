"""Key map between the authors' ``ResNetUNet`` state dict and this project's ``paper``/``full`` model.

The official network (github.com/boukhayma/face_normals, ``resnet_unet/resnet_unet_model.py``) names its
modules after the U-Net it grew from; this project names them after the paper (E_I, E_N, D_N, D_I). The
map is data: ``RENAMES`` turns each of our key prefixes into the official one, so every key of our
model has exactly one official twin. The official state dict also holds entries that are not weights of
their own; they are listed here so that a converter can account for each of them:

* ``ALIASES``: ``layer0..layer4`` are built from ``base_model``'s child modules, so ``base_model.conv1``,
  ``base_model.bn1`` and ``base_model.layerK`` are the *same tensors* under a second name.
* ``DROPPED``: parameters no official forward uses (the ImageNet ``fc`` head of ``base_model``, and the
  full-resolution branch ``conv_original_size0_2/1_2`` of the normal encoder, evaluated by ``forward(x, 1)``
  but never read). Their shapes are checked, then they are left out.
* ``num_batches_tracked`` buffers: absent from files saved with PyTorch < 0.4.1; filled with zeros then.
"""

from __future__ import annotations

# our prefix → official prefix (longest match wins; each is a module boundary, so the order is free)
RENAMES: dict[str, str] = {
    # E_I: the ResNet-18 trunk (layer0 = conv1+bn1+relu, layer1 = maxpool+layer1) and the full-resolution branch
    "image_encoder.full_res.0.": "conv_original_size0.",
    "image_encoder.full_res.1.": "conv_original_size1.",
    "image_encoder.conv1.": "layer0.0.",
    "image_encoder.bn1.": "layer0.1.",
    "image_encoder.layer1.": "layer1.1.",
    "image_encoder.layer2.": "layer2.",
    "image_encoder.layer3.": "layer3.",
    "image_encoder.layer4.": "layer4.",
    # E_N: the deep copies used by forward(x, flag=1)
    "normal_encoder.conv1.": "layer0_2.0.",
    "normal_encoder.bn1.": "layer0_2.1.",
    "normal_encoder.layer1.": "layer1_2.1.",
    "normal_encoder.layer2.": "layer2_2.",
    "normal_encoder.layer3.": "layer3_2.",
    "normal_encoder.layer4.": "layer4_2.",
    # the deactivable skips: 1×1 conv+ReLU on layer0..layer3 (fine to coarse)
    "skip_connections.convs.0.": "layer0_1x1.",
    "skip_connections.convs.1.": "layer1_1x1.",
    "skip_connections.convs.2.": "layer2_1x1.",
    "skip_connections.convs.3.": "layer3_1x1.",
    # D_N: latent projection 512→768, five stages coarse to fine, 1×1 head
    "normal_decoder.latent_proj.": "layer4_1x1.",
    "normal_decoder.blocks.0.": "conv_up3.",
    "normal_decoder.blocks.1.": "conv_up2.",
    "normal_decoder.blocks.2.": "conv_up1.",
    "normal_decoder.blocks.3.": "conv_up0.",
    "normal_decoder.blocks.4.": "conv_original_size2.",
    "normal_decoder.last.": "conv_last.",
    # D_I: the same five stages without skips, from the raw latent
    "image_decoder.blocks.0.": "conv_up3_2.",
    "image_decoder.blocks.1.": "conv_up2_2.",
    "image_decoder.blocks.2.": "conv_up1_2.",
    "image_decoder.blocks.3.": "conv_up0_2.",
    "image_decoder.blocks.4.": "conv_original_size2_2.",
    "image_decoder.last.": "conv_last_2.",
}

# official alias prefix → the official prefix it shares storage with
ALIASES: dict[str, str] = {
    "base_model.conv1.": "layer0.0.",
    "base_model.bn1.": "layer0.1.",
    "base_model.layer1.": "layer1.1.",
    "base_model.layer2.": "layer2.",
    "base_model.layer3.": "layer3.",
    "base_model.layer4.": "layer4.",
}

# official keys no forward reads: key → shape (checked, then dropped)
DROPPED: dict[str, tuple[int, ...]] = {
    "base_model.fc.weight": (1000, 512),
    "base_model.fc.bias": (1000,),
    "conv_original_size0_2.0.weight": (64, 3, 3, 3),
    "conv_original_size0_2.0.bias": (64,),
    "conv_original_size1_2.0.weight": (64, 64, 3, 3),
    "conv_original_size1_2.0.bias": (64,),
}

OPTIONAL_SUFFIX = ".num_batches_tracked"  # missing from PyTorch < 0.4.1 files


def _swap_prefix(key: str, table: dict[str, str]) -> str | None:
    best = max((p for p in table if key.startswith(p)), key=len, default=None)
    return None if best is None else table[best] + key[len(best):]


def official_name(our_key: str) -> str:
    """The official state-dict key holding the weights of ``our_key``."""
    name = _swap_prefix(our_key, RENAMES)
    if name is None:
        raise KeyError(f"{our_key!r} has no counterpart in the official network")
    return name


def alias_target(official_key: str) -> str | None:
    """For a ``base_model.*`` alias, the key it duplicates (``fc`` is no alias: it is dropped)."""
    return _swap_prefix(official_key, ALIASES)
