"""VGG (Simonyan & Zisserman 2015), configurations A, A-LRN, B, C, D, E of the paper's Table 1, with
and without batch norm, as data (`cfgs`, after torchvision).

State-dict names and shapes are torchvision's (`features.N`, `classifier.0/3/6`), so the official
ImageNet weights load unchanged at 224x224. Unlike torchvision, the first FC layer is sized from the
real geometry: `avgpool` is an `nn.Identity` by default (torchvision's AdaptiveAvgPool2d((7, 7)) is the
identity at 224 anyway, and has no parameters, so the state dict is the same), and at 32x32 the first
FC takes 512x1x1 features instead of a 7x7 grid copied from one pixel. `adaptive_pool=True` restores
torchvision's pooling, e.g. to fine-tune the 224 weights at another input size.
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..layers import checked_output_shape, init_fc_classifier, init_weights, make_activation, make_lrn
from .base import SequentialNet
from .registry import register_model

# An int n is a 3x3 conv with n filters (padding 1, stride 1), "M" a 2x2/2 max-pool, "LRN" local
# response normalisation, and (n, k) a k x k conv with n filters (config C's 1x1 "conv1-n" layers).
cfgs: dict[str, list] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}

BN_ORDERS = ("conv-bn-act", "conv-act-bn")


def make_layers(cfg: list, in_channels: int = 3, batch_norm: bool = False, act: str = "relu",
                order: str = "conv-bn-act") -> nn.Sequential:
    """The convolutional trunk of one configuration, flat like torchvision's so indices match.

    With batch norm, `order` conv-bn-act is torchvision's (and the only one its weights load into);
    conv-act-bn puts BN after the non-linearity (same parameters, swapped indices)."""
    if order not in BN_ORDERS:
        raise ConfigError(f"unknown order {order!r}; known: {', '.join(BN_ORDERS)}")
    layers: list[nn.Module] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "LRN":
            layers.append(make_lrn())
        else:
            n, k = v if isinstance(v, tuple) else (v, 3)
            layers.append(nn.Conv2d(c, n, kernel_size=k, padding=k // 2))
            if batch_norm and order == "conv-bn-act":
                layers += [nn.BatchNorm2d(n), make_activation(act)]
            elif batch_norm:
                layers += [make_activation(act), nn.BatchNorm2d(n)]
            else:
                layers.append(make_activation(act))
            c = n
    return nn.Sequential(*layers)


class VGG(SequentialNet):
    """features (a cfg's trunk) - avgpool (Identity or adaptive 7x7) - classifier FC 4096-4096-K.

    `init`: kaiming (default; He et al. 2015 showed it trains deep VGG-style nets from scratch, where the
    paper had to initialise D and E from the trained A), xavier (the paper's noted alternative) or default."""

    classifier_name = "classifier.6"

    def __init__(self, cfg: str, num_classes: int = 1000, in_channels: int = 3, input_size=(224, 224),
                 batch_norm: bool = False, act: str = "relu", order: str = "conv-bn-act",
                 dropout: float = 0.5, adaptive_pool: bool = False, init: str = "kaiming"):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.cfg = cfg
        self.features = make_layers(cfgs[cfg], in_channels, batch_norm, act, order)
        c, h, w = checked_output_shape(self.features, (in_channels, *self.input_size), f"VGG config {cfg}")
        if adaptive_pool:
            self.avgpool: nn.Module = nn.AdaptiveAvgPool2d((7, 7))
            h = w = 7
        else:
            self.avgpool = nn.Identity()
        self.classifier = nn.Sequential(
            nn.Linear(c * h * w, 4096), make_activation(act), nn.Dropout(dropout),
            nn.Linear(4096, 4096), make_activation(act), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))
        # One stage per resolution: each ends at its max-pool.
        init_weights(self, init)
        if init == "kaiming":  # hidden FCs He fan_in, the last N(0, 0.01): see init_fc_classifier
            init_fc_classifier(self.classifier)


def _vgg(cfg: str, batch_norm: bool, num_classes, in_channels, input_size, *, act: str = "relu",
         order: str = "conv-bn-act", dropout: float = 0.5, adaptive_pool: bool = False,
         init: str = "kaiming") -> VGG:
    """A VGG of table column `cfg`; `order` (BN before or after the activation) matters with batch norm."""
    return VGG(cfg, num_classes, in_channels, input_size, batch_norm=batch_norm, act=act, order=order,
               dropout=dropout, adaptive_pool=adaptive_pool, init=init)


# Canonical input: the paper's 224x224 RGB crops, 1000 ImageNet classes.
_IN = (224, 224)


@register_model("vgg", "VGG config A, 11 weight layers", options_from=_vgg)
def vgg11(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("A", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config A-LRN: A with local response normalisation after conv1", options_from=_vgg)
def vgg11_lrn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("A-LRN", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config B, 13 weight layers", options_from=_vgg)
def vgg13(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("B", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config C, 16 weight layers with three 1x1 convs", options_from=_vgg)
def vgg16_c(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("C", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config D, 16 weight layers (the usual VGG-16)", options_from=_vgg)
def vgg16(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("D", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config E, 19 weight layers", options_from=_vgg)
def vgg19(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("E", False, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config A with batch norm", options_from=_vgg)
def vgg11_bn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("A", True, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config B with batch norm", options_from=_vgg)
def vgg13_bn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("B", True, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config C with batch norm", options_from=_vgg)
def vgg16_c_bn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("C", True, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config D with batch norm", options_from=_vgg)
def vgg16_bn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("D", True, num_classes, in_channels, input_size, **options)


@register_model("vgg", "VGG config E with batch norm", options_from=_vgg)
def vgg19_bn(num_classes=1000, in_channels=3, input_size=_IN, **options):
    return _vgg("E", True, num_classes, in_channels, input_size, **options)
