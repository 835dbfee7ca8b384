"""ResNet-18 encoder (torchvision's layout, written here: torchvision does not load beside this torch build).

The encoder publishes ``feature_info`` like timm: each stage's channels and reduction, so decoders
never hard-code channel counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    name: str
    num_chs: int
    reduction: int


class BasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def _stage(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(in_chs, out_chs, stride), BasicBlock(out_chs, out_chs, 1))


def conv_relu(in_chs: int, out_chs: int, kernel: int) -> nn.Sequential:
    """Conv (with bias) + ReLU: the official code's ``convrelu`` block."""
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel, padding=kernel // 2), nn.ReLU(inplace=True))


RESNET18_CHS = (64, 64, 128, 256, 512)  # stem (layer0), layer1..layer4 at width 1


def scaled_chs(width: float) -> tuple[int, ...]:
    """ResNet-18's stage channels × ``width`` (rounded to multiples of 8, so INT8/SIMD kernels stay aligned)."""
    if width <= 0:
        raise ValueError(f"encoder width multiplier must be > 0, got {width}")
    return tuple(max(8, round(c * width / 8) * 8) for c in RESNET18_CHS)


class ResNet18Encoder(nn.Module):
    """ResNet-18 trunk. ``forward`` returns the features listed in ``feature_info``, finest first.

    With ``full_res_chs > 0`` it also runs the official code's full-resolution branch
    (two 3×3 conv+ReLU on the input pixels), published as feature ``full`` (reduction 1).
    ``width`` scales every stage's channels (0.5 → 32/32/64/128/256): the "lite" network's encoder.
    Width 1 is torchvision's layout, unchanged.
    """

    def __init__(self, in_chans: int = 3, full_res_chs: int = 0, width: float = 1.0) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = scaled_chs(width)
        self.full_res = (
            nn.Sequential(conv_relu(in_chans, full_res_chs, 3), conv_relu(full_res_chs, full_res_chs, 3))
            if full_res_chs > 0 else None
        )
        self.conv1 = nn.Conv2d(in_chans, c0, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c0)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _stage(c0, c1, 1)
        self.layer2 = _stage(c1, c2, 2)
        self.layer3 = _stage(c2, c3, 2)
        self.layer4 = _stage(c3, c4, 2)
        infos = [FeatureInfo("full", full_res_chs, 1)] if full_res_chs > 0 else []
        infos += [FeatureInfo("layer0", c0, 2), FeatureInfo("layer1", c1, 4), FeatureInfo("layer2", c2, 8),
                  FeatureInfo("layer3", c3, 16), FeatureInfo("layer4", c4, 32)]
        self.feature_info: tuple[FeatureInfo, ...] = tuple(infos)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for module in self.modules():  # zero-init last BN of each block: blocks start as identity
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.full_res(x)] if self.full_res is not None else []
        x0 = self.relu(self.bn1(self.conv1(x)))
        x1 = self.layer1(self.maxpool(x0))
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [*features, x0, x1, x2, x3, x4]
