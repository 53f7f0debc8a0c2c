"""LeNet family (LeCun et al. 1989-1998): the fully connected LeNet300 variants, LeNet-1 and LeNet-5."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..layers import make_activation, sequential_output_shape
from .base import ConvNet
from .registry import register_model


def _pool(kind: str) -> nn.Module:
    if kind not in ("avg", "max"):
        raise ConfigError(f"unknown pooling {kind!r}; known: avg, max")
    return nn.AvgPool2d(2) if kind == "avg" else nn.MaxPool2d(2)


class LeNet(ConvNet):
    """A conv trunk (`features`) then a fully connected `classifier` sized from the real geometry."""

    stage_names = ("features",)

    def __init__(self, features: nn.Sequential, hidden: list[int], act: str, num_classes: int,
                 in_channels: int, input_size: tuple[int, int]):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.features = features
        c, h, w = sequential_output_shape(features, (in_channels, *input_size), prefix="features.")
        layers: list[nn.Module] = [nn.Flatten()]
        width = c * h * w
        for n in hidden:
            layers += [nn.Linear(width, n), make_activation(act)]
            width = n
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)
        self.classifier_name = f"classifier.{len(layers) - 1}"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)


@register_model("lenet", "LeNet-5 (LeCun 1998): C1-S2-C3-S4-C5-F6-output on 32x32, 61,706 parameters")
def lenet5(num_classes=10, in_channels=1, input_size=(32, 32), act="tanh", pool="avg"):
    features = nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), make_activation(act), _pool(pool),   # C1, S2
        nn.Conv2d(6, 16, 5), make_activation(act), _pool(pool),            # C3, S4
        nn.Conv2d(16, 120, 5), make_activation(act),                        # C5
    )
    return LeNet(features, [84], act, num_classes, in_channels, input_size)
