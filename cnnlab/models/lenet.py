"""LeNet family (LeCun et al. 1989-1998): the fully connected LeNet300 variants, LeNet-1 and LeNet-5,
as the lectures present them (MNIST digits, 28x28 or 32x32 grey images, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import checked_output_shape, init_weights, make_activation, resolve_init
from .base import ConvNet
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


class LeNet(ConvNet):
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
        # Stages end where the resolution drops (each pooling layer); the last conv closes the trunk.
        ends = [f"features.{i}" for i, m in enumerate(features) if isinstance(m, (nn.AvgPool2d, nn.MaxPool2d))]
        if len(features) and f"features.{len(features) - 1}" not in ends:
            ends.append(f"features.{len(features) - 1}")
        self.stage_names = tuple(ends)
        init_weights(self, resolve_init(init, act))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)


# --- fully connected LeNet300 (the lectures' starting point, 28x28 MNIST) -------------------------------

@register_model("lenet", "LeNet300, output layer only: 784 -> 10 linear classifier (12.0% MNIST error)")
def lenet300_linear(num_classes=10, in_channels=1, input_size=(28, 28), act="tanh", init="auto"):
    return LeNet(nn.Sequential(), [], act, num_classes, in_channels, input_size, init, "LeNet300")


@register_model("lenet", "LeNet300, one hidden FC layer: 784-300-10 (4.7% MNIST error)")
def lenet300(num_classes=10, in_channels=1, input_size=(28, 28), act="tanh", init="auto"):
    return LeNet(nn.Sequential(), [300], act, num_classes, in_channels, input_size, init, "LeNet300")


@register_model("lenet", "LeNet-300-100, two hidden FC layers: 784-300-100-10 (3.05% MNIST error)")
def lenet300_100(num_classes=10, in_channels=1, input_size=(28, 28), act="tanh", init="auto"):
    return LeNet(nn.Sequential(), [300, 100], act, num_classes, in_channels, input_size, init,
                 "LeNet-300-100")


# --- convolutional LeNets ---------------------------------------------------------------------------------

@register_model("lenet", "LeNet-1 (LeCun 1989-93): conv5-4, pool, conv5-12, pool, fc10 on 28x28 (1.7% error)")
def lenet1(num_classes=10, in_channels=1, input_size=(28, 28), act="tanh", pool="avg",
           order="conv-act-pool", init="auto"):
    # Fully connected C3 (every 8x8 map sees all 4 maps): 3,246 parameters. The 1989 net's sparse
    # C3 connection table and shared subsampling coefficients brought it to about 2,600.
    features = nn.Sequential(*_conv_stage(in_channels, 4, act, pool, order),   # C1 4@24x24, S2 4@12x12
                             *_conv_stage(4, 12, act, pool, order))            # C3 12@8x8, S4 12@4x4
    return LeNet(features, [], act, num_classes, in_channels, input_size, init, "LeNet-1")


@register_model("lenet", "LeNet-5 (LeCun 1998): C1-S2-C3-S4-C5-F6-output on 32x32 (0.95% MNIST error)")
def lenet5(num_classes=10, in_channels=1, input_size=(32, 32), act="tanh", pool="avg",
           order="conv-act-pool", init="auto"):
    # "Common form": C3 fully connected to S2 (the paper's C3 uses a 60-entry connection table and
    # the paper's output layer is RBF units; both are replaced by plain conv / linear layers).
    features = nn.Sequential(*_conv_stage(in_channels, 6, act, pool, order),   # C1 6@28x28, S2 6@14x14
                             *_conv_stage(6, 16, act, pool, order),            # C3 16@10x10, S4 16@5x5
                             *_conv_stage(16, 120, act, None, order))          # C5 120@1x1
    return LeNet(features, [84], act, num_classes, in_channels, input_size, init, "LeNet-5")  # F6 84, output
