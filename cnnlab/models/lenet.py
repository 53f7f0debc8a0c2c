"""LeNet family (LeCun et al. 1989-1998): the fully connected LeNet300 variants, LeNet-1 and LeNet-5,
as the lectures present them (MNIST digits, 28x28 or 32x32 grey images, 10 classes)."""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..layers import checked_output_shape, init_weights, make_activation, resolve_init
from .base import SequentialNet
from .registry import register_model

# Where the pooling sits relative to the non-linearity. LeNet-5's paper subsamples first (S2 averages,
# scales, adds a bias, then squashes); most re-implementations squash first. With max pooling and a
# monotonic activation the two orders compute the same function; with average pooling they differ.
POOL_ORDERS = ("conv-act-pool", "conv-pool-act")


def _pool(kind: str) -> nn.Module:
    if kind not in ("avg", "max"):
        raise ConfigError(f"unknown pooling {kind!r}; known: avg, max")
    return nn.AvgPool2d(2) if kind == "avg" else nn.MaxPool2d(2)


def _conv_stage(in_ch: int, out_ch: int, act: str, pool: str | None, order: str) -> list[nn.Module]:
    """conv5x5 + activation (+ 2x2 pool, before or after the activation per `order`)."""
    if order not in POOL_ORDERS:
        raise ConfigError(f"unknown order {order!r}; known: {', '.join(POOL_ORDERS)}")
    conv = nn.Conv2d(in_ch, out_ch, 5)
    if pool is None:
        return [conv, make_activation(act)]
    if order == "conv-act-pool":
        return [conv, make_activation(act), _pool(pool)]
    return [conv, _pool(pool), make_activation(act)]


class LeNet(SequentialNet):
    """A conv trunk (`features`, possibly empty) then a fully connected `classifier` sized from the
    real geometry, so any input size the trunk accepts gives a working network."""

    def __init__(self, features: nn.Sequential, hidden: list[int], act: str, num_classes: int,
                 in_channels: int, input_size: tuple[int, int], init: str = "auto", name: str = "LeNet"):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.features = features
        c, h, w = checked_output_shape(features, (in_channels, *input_size), name)
        layers: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for n in hidden:
            layers += [nn.Linear(width, n), make_activation(act)]
            width = n
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)
        self.classifier_name = f"classifier.{len(layers) - 1}"
        init_weights(self, resolve_init(init, act))


def _fc_lenet(hidden: list[int], name: str, num_classes, in_channels, input_size, *, act: str = "tanh",
              init: str = "auto") -> LeNet:
    """A fully connected LeNet300 variant with `hidden` layer widths; `init` auto is Xavier for tanh."""
    return LeNet(nn.Sequential(), hidden, act, num_classes, in_channels, input_size, init, name)


def _conv_lenet(stages: list[tuple[int, bool]], hidden: list[int], name: str, num_classes, in_channels,
                input_size, *, act: str = "tanh", pool: str = "avg", order: str = "conv-act-pool",
                init: str = "auto") -> LeNet:
    """A convolutional LeNet: one 5x5 conv per (filters, pooled) stage (+ 2x2 `pool` where pooled, before
    or after the activation per `order`), then fc layers of `hidden` widths and the output layer."""
    layers: list[nn.Module] = []
    c = in_channels
    for filters, pooled in stages:
        layers += _conv_stage(c, filters, act, pool if pooled else None, order)
        c = filters
    return LeNet(nn.Sequential(*layers), hidden, act, num_classes, in_channels, input_size, init, name)


# --- fully connected LeNet300 (the lectures' starting point, 28x28 MNIST) -------------------------------

@register_model("lenet", "LeNet300, output layer only: 784 -> 10 linear classifier (12.0% MNIST error)",
                options_from=_fc_lenet)
def lenet300_linear(num_classes=10, in_channels=1, input_size=(28, 28), **options):
    return _fc_lenet([], "LeNet300", num_classes, in_channels, input_size, **options)


@register_model("lenet", "LeNet300, one hidden FC layer: 784-300-10 (4.7% MNIST error)", options_from=_fc_lenet)
def lenet300(num_classes=10, in_channels=1, input_size=(28, 28), **options):
    return _fc_lenet([300], "LeNet300", num_classes, in_channels, input_size, **options)


@register_model("lenet", "LeNet-300-100, two hidden FC layers: 784-300-100-10 (3.05% MNIST error)",
                options_from=_fc_lenet)
def lenet300_100(num_classes=10, in_channels=1, input_size=(28, 28), **options):
    return _fc_lenet([300, 100], "LeNet-300-100", num_classes, in_channels, input_size, **options)


# --- convolutional LeNets ---------------------------------------------------------------------------------

@register_model("lenet", "LeNet-1 (LeCun 1989-93): conv5-4, pool, conv5-12, pool, fc10 on 28x28 (1.7% error)",
                options_from=_conv_lenet)
def lenet1(num_classes=10, in_channels=1, input_size=(28, 28), **options):
    # C1 4@24x24, S2 4@12x12, C3 12@8x8, S4 12@4x4, output. C3 is fully connected (every 8x8 map sees
    # all 4 maps): 3,246 parameters; the 1989 net's sparse C3 table and shared subsampling
    # coefficients brought it to about 2,600.
    return _conv_lenet([(4, True), (12, True)], [], "LeNet-1", num_classes, in_channels, input_size, **options)


@register_model("lenet", "LeNet-5 (LeCun 1998): C1-S2-C3-S4-C5-F6-output on 32x32 (0.95% MNIST error)",
                options_from=_conv_lenet)
def lenet5(num_classes=10, in_channels=1, input_size=(32, 32), **options):
    # C1 6@28x28, S2 6@14x14, C3 16@10x10, S4 16@5x5, C5 120@1x1, F6 84, output. The "common form": C3
    # fully connected to S2 (the paper's C3 uses a 60-entry connection table and its output layer is
    # RBF units; both are replaced by plain conv / linear layers).
    return _conv_lenet([(6, True), (16, True), (120, False)], [84], "LeNet-5", num_classes, in_channels,
                       input_size, **options)
