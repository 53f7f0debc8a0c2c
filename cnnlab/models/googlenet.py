"""GoogLeNet / Inception-v1 (Szegedy et al. 2014): inception modules with 1x1 dimension reductions and
global average pooling instead of big fully connected layers, with torchvision's parameter names.

Compatibility with torchvision (so its ImageNet state dict loads unchanged) is the default, which
differs from the paper in three documented ways:
  - every conv is conv + BatchNorm(eps=0.001) + ReLU (BN postdates the paper); `batch_norm=False`
    gives the paper's conv(+bias) + ReLU instead;
  - the "5x5" branch uses a 3x3 conv (a known torchvision quirk kept for its weights);
    `branch3_kernel=5` gives the paper's true 5x5;
  - the auxiliary heads adaptive-average-pool to 4x4 (the paper: 5x5 avg-pool, stride 3, which gives
    4x4 on the 14x14 maps at 224x224), so they work at any input size; main-head dropout is 0.2
    (torchvision) rather than the paper's 0.4 (`dropout=0.4`).
Auxiliary classifiers (`aux_logits=True`) only run in training mode, where `model(x)` returns
GoogLeNetOutputs(logits, aux_logits2, aux_logits1) like torchvision (the paper weights each auxiliary
loss by 0.3); in eval mode, and always when aux_logits=False, `model(x)` returns plain logits.
The official file contains the aux1/aux2 weights: load it into `googlenet(aux_logits=True)` strictly,
or into the default model with `load_state_dict(sd, strict=False)` (or drop the "aux" keys). Those
weights also expect `transform_input=True` (they were ported from TensorFlow's [-1, 1] inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, GeometryError
from ..layers import init_weights, module_output_shape
from .base import ConvNet
from .registry import register_model

# (name, in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj): the paper's Table 1.
INCEPTION_SPECS = (
    ("inception3a", 192, 64, 96, 128, 16, 32, 32),
    ("inception3b", 256, 128, 128, 192, 32, 96, 64),
    ("inception4a", 480, 192, 96, 208, 16, 48, 64),
    ("inception4b", 512, 160, 112, 224, 24, 64, 64),
    ("inception4c", 512, 128, 128, 256, 24, 64, 64),
    ("inception4d", 512, 112, 144, 288, 32, 64, 64),
    ("inception4e", 528, 256, 160, 320, 32, 128, 128),
    ("inception5a", 832, 256, 160, 320, 32, 128, 128),
    ("inception5b", 832, 384, 192, 384, 48, 128, 128),
)


class GoogLeNetOutputs(NamedTuple):
    """What a GoogLeNet with auxiliary heads returns in training mode (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class BasicConv2d(nn.Module):
    """conv + BN(eps=1e-3) + ReLU as torchvision (`conv`, `bn`); without BN: conv with bias + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, batch_norm: bool = True, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, bias=not batch_norm, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_ch, eps=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x, inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1x1; 1x1 -> 3x3; 1x1 -> "5x5"; 3x3 max-pool
    -> 1x1. The 1x1 convs before the big kernels are the dimension reductions that keep it cheap."""

    def __init__(self, in_ch: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, branch3_kernel: int = 3, batch_norm: bool = True):
        super().__init__()
        bn = batch_norm
        self.branch1 = BasicConv2d(in_ch, ch1x1, bn, kernel_size=1)
        self.branch2 = nn.Sequential(BasicConv2d(in_ch, ch3x3red, bn, kernel_size=1),
                                     BasicConv2d(ch3x3red, ch3x3, bn, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_ch, ch5x5red, bn, kernel_size=1),
                                     BasicConv2d(ch5x5red, ch5x5, bn, kernel_size=branch3_kernel,
                                                 padding=branch3_kernel // 2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     BasicConv2d(in_ch, pool_proj, bn, kernel_size=1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 avg-pool, 1x1 conv to 128, fc 2048 -> 1024, ReLU, dropout 0.7, fc."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.7, batch_norm: bool = True):
        super().__init__()
        self.conv = BasicConv2d(in_ch, 128, batch_norm, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(ConvNet):
    """The 22-layer GoogLeNet: stem convs, inception 3a-3b, 4a-4e, 5a-5b, global average pool, fc."""

    inception_names = tuple(spec[0] for spec in INCEPTION_SPECS)
    classifier_name = "fc"
    aux_loss_weight = 0.3  # Szegedy et al. 2014: auxiliary losses weighted 0.3 in training, ignored at inference

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: tuple[int, int] = (224, 224),
                 *, aux_logits: bool = False, branch3_kernel: int = 3, batch_norm: bool = True,
                 dropout: float = 0.2, dropout_aux: float = 0.7, transform_input: bool = False):
        super().__init__()
        if branch3_kernel not in (3, 5):
            raise ConfigError(f"branch3_kernel must be 3 (torchvision) or 5 (paper), got {branch3_kernel}")
        if transform_input and in_channels != 3:
            raise ConfigError("transform_input re-normalises RGB images; it needs in_channels=3")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.aux_logits, self.transform_input = aux_logits, transform_input
        bn = batch_norm
        self.conv1 = BasicConv2d(in_channels, 64, bn, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, bn, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, bn, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name, *channels in INCEPTION_SPECS:
            setattr(self, name, Inception(*channels, branch3_kernel=branch3_kernel, batch_norm=bn))
            if name == "inception3b":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "inception4e":
                self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        # Attribute order decides state-dict order; torchvision registers aux heads after the trunk.
        self.aux1 = InceptionAux(512, num_classes, dropout_aux, bn) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux, bn) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

        init_weights(self, "kaiming")  # He init for convs and linears, BN gamma 1 / beta 0
        self.feature_shape = self.check_geometry(self.input_size)

    def check_geometry(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        """(C, H, W) of forward_features for `input_size` by (W - F + 2P)/S + 1 over the stem convs and
        the stride-2 max-pools (inception modules keep the spatial size); raises GeometryError."""
        if min(input_size) < 1:
            raise GeometryError(f"input size {tuple(input_size)} must be positive")
        shape = (self.in_channels, *input_size)
        for name in ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "maxpool3", "maxpool4"):
            m = getattr(self, name)
            shape = module_output_shape(m if isinstance(m, nn.MaxPool2d) else m.conv, shape, name=name)
        return (self.inception5b.out_channels, shape[1], shape[2])

    def stage_layout(self) -> list[tuple[str, tuple[str, ...]]]:
        """stem (conv1-3 and two max-pools: /8), stage1 (3a, 3b, pool: /16), stage2 (4a-4e, pool: /32),
        stage3 (5a, 5b), head (pool, dropout, fc, and the auxiliary classifiers when present)."""
        aux = ("aux1", "aux2") if self.aux_logits else ()
        return [("stem", ("conv1", "maxpool1", "conv2", "conv3", "maxpool2")),
                ("stage1", ("inception3a", "inception3b", "maxpool3")),
                ("stage2", ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4")),
                ("stage3", ("inception5a", "inception5b")),
                ("head", ("avgpool", "dropout", "fc", *aux))]

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        # ImageNet-normalised RGB -> the [-1, 1] scaling the ported TensorFlow weights expect.
        if not self.transform_input:
            return x
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        chans = [x[:, i:i + 1] * (std[i] / 0.5) + (mean[i] - 0.5) / 0.5 for i in range(3)]
        return torch.cat(chans, 1)

    def _trunk(self, x: torch.Tensor, with_aux: bool):
        x = self._transform_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        return x, aux2, aux1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x, with_aux=False)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dropout(torch.flatten(self.avgpool(x), 1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor):
        """Plain logits, or GoogLeNetOutputs(logits, aux2, aux1) in training mode with aux_logits."""
        if self.training and self.aux_logits:
            x, aux2, aux1 = self._trunk(x, with_aux=True)
            return GoogLeNetOutputs(self.forward_head(x), aux2, aux1)
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace `fc` and, when present, the auxiliary heads' final layers."""
        super().reset_classifier(num_classes)
        for aux in ("aux1", "aux2"):
            if getattr(self, aux) is not None:
                self._replace_linear(f"{aux}.fc2", num_classes)


@register_model("googlenet", "GoogLeNet (Szegedy et al. 2014): 9 inception modules, GAP, 6,624,904 params "
                "(13,004,888 with aux heads), torchvision names")
def googlenet(num_classes=1000, in_channels=3, input_size=(224, 224), aux_logits=False, branch3_kernel=3,
              batch_norm=True, dropout=0.2, dropout_aux=0.7, transform_input=False):
    return GoogLeNet(num_classes, in_channels, tuple(input_size), aux_logits=aux_logits,
                     branch3_kernel=branch3_kernel, batch_norm=batch_norm, dropout=dropout,
                     dropout_aux=dropout_aux, transform_input=transform_input)
