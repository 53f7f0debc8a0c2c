"""ResNet family (He et al. 2015) and the plain nets it was compared against, with torchvision's
parameter names so the official ImageNet state dicts load unchanged.

Architectures are data, as in timm: `RESNET_SPECS[name] = (block class, blocks per stage)`. Options:
  - `stem`: "imagenet" (7x7/2 conv + 3x3/2 max-pool, the paper's) or "cifar" (3x3/1 conv, no max-pool,
    so 32x32 inputs keep a 32x32 map in layer1, as in the paper's CIFAR-10 nets);
  - `drop_path_rate`: stochastic depth (Huang et al. 2016); block l of L (counted over the whole net)
    drops its residual branch with probability p_l = l/L * drop_path_rate, for the whole mini-batch as
    in the paper (`drop_path_mode="batch"`) or per sample as timm does (`drop_path_mode="sample"`);
    survivors are scaled by 1/(1-p_l) in training so evaluation is the plain deterministic net (the
    paper rescales at test time instead, the same in expectation);
  - `zero_init_residual`: zero the last BN gamma of every block so each starts as the identity
    (Goyal et al. 2017);
  - `shortcut`: "B" (1x1 projection when the shape changes, torchvision's and the paper's default for
    ImageNet) or "A" (parameter-free: stride-2 subsampling + zero channel padding, as in the paper's
    plain-vs-residual comparison, Fig. 4, where both nets have identical parameters).
Bottleneck blocks stride in their 3x3 conv (torchvision's "v1.5"), not the first 1x1 as in the paper:
the parameter count is the same, the published weights need it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError, GeometryError
from ..layers import DropPath, init_weights, module_output_shape
from .base import ConvNet
from .registry import register_model

STEMS = ("imagenet", "cifar")
SHORTCUTS = ("A", "B")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by `stride` and zero-pad the extra channels (no parameters)."""

    def __init__(self, out_ch: int, stride: int):
        super().__init__()
        self.out_ch, self.stride = out_ch, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_ch - x.shape[1]
        if extra > 0:
            x = torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"out_ch={self.out_ch}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34); with `residual=False` the same block without its shortcut (plain net)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 drop_prob: float = 0.0, residual: bool = True, drop_mode: str = "batch"):
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_prob, drop_mode)  # no parameters: state dicts are unaffected

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def main_path(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv1), ("conv2", self.conv2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if not self.residual:
            return self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.drop_path(out) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) (ResNet-50/101/152); stride in the 3x3 as torchvision."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 drop_prob: float = 0.0, residual: bool = True, drop_mode: str = "batch"):
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = DropPath(drop_prob, drop_mode)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def main_path(self) -> list[tuple[str, nn.Module]]:
        return [("conv1", self.conv1), ("conv2", self.conv2), ("conv3", self.conv3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if not self.residual:
            return self.relu(out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.drop_path(out) + identity)


# name -> (block, blocks per stage); the paper's Table 1.
RESNET_SPECS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
    "plain18": (BasicBlock, (2, 2, 2, 2)),
    "plain34": (BasicBlock, (3, 4, 6, 3)),
}


class ResNet(ConvNet):
    """Stem, four stages `layer1`..`layer4` of `block`s (widths 64..512, x expansion), global average
    pool and `fc`. With `residual=False` it is the paper's plain counterpart (no shortcuts at all)."""

    layer_names = ("layer1", "layer2", "layer3", "layer4")
    classifier_name = "fc"

    def __init__(self, block: type[nn.Module], layers: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3, input_size: tuple[int, int] = (224, 224), *, residual: bool = True,
                 stem: str = "imagenet", drop_path_rate: float = 0.0, drop_path_mode: str = "batch",
                 zero_init_residual: bool = False, shortcut: str = "B"):
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"unknown stem {stem!r}; known: {', '.join(STEMS)}")
        if shortcut not in SHORTCUTS:
            raise ConfigError(f"unknown shortcut option {shortcut!r}; known: A (zero-pad), B (projection)")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        if not residual and (drop_path_rate > 0 or zero_init_residual):
            raise ConfigError("a plain net has no residual branch to drop or zero-initialise")
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.block, self.layers, self.residual, self.stem = block, tuple(layers), residual, stem
        self.drop_path_mode = drop_path_mode

        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)

        total, index = sum(self.layers), 0
        in_ch = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), self.layers)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                index += 1  # Huang et al.: p_l = l/L * p_L, l = 1..L over all blocks
                blocks.append(self._make_block(in_ch, planes, stride if j == 0 else 1,
                                               index / total * drop_path_rate, shortcut))
                in_ch = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        init_weights(self, "kaiming")   # He et al.: convs N(0, 2/fan_out); BN gamma 1, beta 0
        self.fc.reset_parameters()      # torchvision keeps PyTorch's default fc init
        if zero_init_residual:
            for m in self.blocks():
                nn.init.zeros_(m.last_bn.weight)
        self.feature_shape = self.check_geometry(self.input_size)

    def _make_block(self, in_ch: int, planes: int, stride: int, drop_prob: float, shortcut: str) -> nn.Module:
        """One block; a shortcut (projection B or zero-pad A) where the shape changes and the net is residual."""
        out_ch = planes * self.block.expansion
        downsample = None
        if self.residual and (stride != 1 or in_ch != out_ch):
            if shortcut == "B":
                downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
            else:
                downsample = PadShortcut(out_ch, stride)
        return self.block(in_ch, planes, stride, downsample, drop_prob, self.residual, self.drop_path_mode)

    def blocks(self) -> list[nn.Module]:
        """All residual (or plain) blocks, shallow to deep."""
        return [b for s in self.layer_names for b in self.get_submodule(s)]

    def check_geometry(self, input_size: tuple[int, int]) -> tuple[int, int, int]:
        """(C, H, W) of forward_features for `input_size`, by (W - F + 2P)/S + 1 along the main path;
        raises GeometryError naming the first layer the input is too small for."""
        if min(input_size) < 1:
            raise GeometryError(f"input size {tuple(input_size)} must be positive")
        shape = (self.in_channels, *input_size)
        for name in ("conv1", "maxpool"):
            shape = module_output_shape(getattr(self, name), shape, name=name)
        for s in self.layer_names:
            for j, blk in enumerate(self.get_submodule(s)):
                for name, conv in blk.main_path():
                    shape = module_output_shape(conv, shape, name=f"{s}.{j}.{name}")
        return shape

    def stage_layout(self) -> list[tuple[str, tuple[str, ...]]]:
        """stem (conv1, bn1, relu, maxpool: /4, or /1 with the CIFAR stem), stage1..4 = layer1..4 (each
        downsamples at its start but layer1), head (avgpool, fc)."""
        return [("stem", ("conv1", "bn1", "relu", "maxpool")),
                *[(f"stage{i}", (name,)) for i, name in enumerate(self.layer_names, start=1)],
                ("head", ("avgpool", "fc"))]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)


def _resnet(name: str, num_classes, in_channels, input_size, *, stem: str = "imagenet",
            drop_path_rate: float = 0.0, drop_path_mode: str = "batch", zero_init_residual: bool = False,
            shortcut: str = "B") -> ResNet:
    """The ResNet of RESNET_SPECS[name] (with shortcuts)."""
    block, layers = RESNET_SPECS[name]
    return ResNet(block, layers, num_classes, in_channels, tuple(input_size), stem=stem,
                  drop_path_rate=drop_path_rate, drop_path_mode=drop_path_mode,
                  zero_init_residual=zero_init_residual, shortcut=shortcut)


def _plain(name: str, num_classes, in_channels, input_size, *, stem: str = "imagenet") -> ResNet:
    """The plain (no-shortcut) counterpart of RESNET_SPECS[name]: same layers, nothing added back."""
    block, layers = RESNET_SPECS[name]
    return ResNet(block, layers, num_classes, in_channels, tuple(input_size), residual=False, stem=stem)


@register_model("resnet", "ResNet-18 (He et al. 2015): basic blocks 2-2-2-2, 11,689,512 params, torchvision names",
                options_from=_resnet)
def resnet18(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _resnet("resnet18", num_classes, in_channels, input_size, **options)


@register_model("resnet", "ResNet-34: basic blocks 3-4-6-3, 21,797,672 params, torchvision names",
                options_from=_resnet)
def resnet34(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _resnet("resnet34", num_classes, in_channels, input_size, **options)


@register_model("resnet", "ResNet-50: bottleneck blocks 3-4-6-3, 25,557,032 params, torchvision names",
                options_from=_resnet)
def resnet50(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _resnet("resnet50", num_classes, in_channels, input_size, **options)


@register_model("resnet", "ResNet-101: bottleneck blocks 3-4-23-3, 44,549,160 params, torchvision names",
                options_from=_resnet)
def resnet101(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _resnet("resnet101", num_classes, in_channels, input_size, **options)


@register_model("resnet", "ResNet-152: bottleneck blocks 3-8-36-3, 60,192,808 params, torchvision names",
                options_from=_resnet)
def resnet152(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _resnet("resnet152", num_classes, in_channels, input_size, **options)


@register_model("resnet", "Plain-18 (He et al. 2015, Fig. 4): ResNet-18 without shortcuts, 11,515,688 params",
                options_from=_plain)
def plain18(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _plain("plain18", num_classes, in_channels, input_size, **options)


@register_model("resnet", "Plain-34 (He et al. 2015, Fig. 4): ResNet-34 without shortcuts, 21,623,848 params",
                options_from=_plain)
def plain34(num_classes=1000, in_channels=3, input_size=(224, 224), **options):
    return _plain("plain34", num_classes, in_channels, input_size, **options)
