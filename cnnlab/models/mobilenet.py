"""MobileNet v1 (Howard et al. 2017): a 3x3 conv stem then 13 depthwise-separable blocks (3x3
depthwise conv-BN-ReLU, 1x1 pointwise conv-BN-ReLU), global average pooling and one fc layer.

A depthwise-separable block costs 9*C_in + C_in*C_out weights against 9*C_in*C_out for a full 3x3 conv.
`width_mult` (the paper's alpha) thins every layer to int(alpha * channels): 1.0 / 0.75 / 0.5 / 0.25 give
4,231,976 / 2,585,560 / 1,331,592 / 470,072 parameters at 1000 classes (Table 6: 4.2M/2.6M/1.3M/0.5M).
The resolution multiplier (rho) is just the input size (224, 192, 160, 128): global pooling makes the
head independent of it. The paper's Table 1 lists the last depthwise conv with stride 2, a known typo
(the map stays 7x7); it is stride 1 here, as in every reference implementation. There is no torchvision
MobileNet v1, so parameter names are cnnlab's own (stem, stage1..stage5, fc).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError, GeometryError
from ..layers import ConvNormAct, init_weights, sequential_output_shape
from .base import ConvNet
from .registry import register_model

# (out channels, stride) of each depthwise-separable block, grouped by output resolution (224 input:
# 112, 56, 28, 14, 7): the paper's Table 1.
MOBILENET_V1_STAGES: tuple[tuple[tuple[int, int], ...], ...] = (
    ((64, 1),),
    ((128, 2), (128, 1)),
    ((256, 2), (256, 1)),
    ((512, 2),) + ((512, 1),) * 5,
    ((1024, 2), (1024, 1)),
)


class DepthwiseSeparable(nn.Sequential):
    """Depthwise 3x3 conv (groups = channels: one filter per input channel) then a pointwise 1x1 conv
    that mixes channels, each followed by BN and the activation (`dw`, `pw`)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, act: str = "relu", order: str = "conv-bn-act"):
        super().__init__(OrderedDict(
            dw=ConvNormAct(in_ch, in_ch, 3, stride, groups=in_ch, act=act, order=order),
            pw=ConvNormAct(in_ch, out_ch, 1, act=act, order=order)))


class MobileNetV1(ConvNet):
    """`stem` (3x3/2 conv to 32*alpha), `stage1`..`stage5` of depthwise-separable blocks, GAP, `fc`."""

    trunk_names = ("stem", "stage1", "stage2", "stage3", "stage4", "stage5")
    classifier_name = "fc"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224),
                 *, width_mult: float = 1.0, dropout: float = 0.0, act: str = "relu", order: str = "conv-bn-act"):
        super().__init__()
        if not width_mult > 0:
            raise ConfigError(f"width_mult must be positive, got {width_mult}")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.width_mult = width_mult

        def width(c: int) -> int:
            return max(1, int(c * width_mult))

        ch = width(32)
        self.stem = ConvNormAct(in_channels, ch, 3, 2, act=act, order=order)
        for i, stage in enumerate(MOBILENET_V1_STAGES, start=1):
            blocks = []
            for out, stride in stage:
                blocks.append(DepthwiseSeparable(ch, width(out), stride, act, order))
                ch = width(out)
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
        self.num_features = ch
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(ch, num_classes)

        init_weights(self, "kaiming")  # convs N(0, 2/fan_out), BN gamma 1 / beta 0
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        self.feature_shape = self.check_geometry(self.input_size)

    def check_geometry(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        """(C, H, W) of forward_features for `input_size`; raises GeometryError naming the layer."""
        if min(input_size) < 1:
            raise GeometryError(f"input size {tuple(input_size)} must be positive")
        trunk = [(name, self.get_submodule(name)) for name in self.trunk_names]
        return sequential_output_shape(trunk, (self.in_channels, *input_size))

    def stage_layout(self) -> list[tuple[str, tuple[str, ...]]]:
        """stem, stage1..stage5 as built (each stage after stage1 starts with its stride-2 block), head."""
        return [(name, (name,)) for name in self.trunk_names] + [("head", ("avgpool", "dropout", "fc"))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.trunk_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)


@register_model("mobilenet", "MobileNet v1 (Howard et al. 2017): depthwise-separable convs, width_mult alpha; "
                "4,231,976 params at alpha=1")
def mobilenet_v1(num_classes=1000, in_channels=3, input_size=(224, 224), width_mult=1.0, dropout=0.0,
                 act="relu", order="conv-bn-act"):
    return MobileNetV1(num_classes, in_channels, tuple(input_size), width_mult=width_mult, dropout=dropout,
                       act=act, order=order)
