"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) as the lectures count it: single tower, 227x227x3,
62,378,344 parameters. The two-GPU split (grouped conv2/4/5) is merged into one path, as the lectures'
per-layer table does; torchvision's `alexnet` is the different 64-192-384-256-256 "one weird trick"
variant, so only its layout (features / avgpool / classifier.1,4,6) is shared, not its shapes."""

from __future__ import annotations

from torch import nn

from ..layers import checked_output_shape, init_fc_classifier, init_weights, make_lrn
from .base import SequentialNet
from .registry import register_model


class AlexNet(SequentialNet):
    """conv1 96@11x11/4 - [LRN] - pool - conv2 256@5x5 p2 - [LRN] - pool - conv3 384, conv4 384,
    conv5 256 @3x3 p1 - pool - dropout, FC 4096 - dropout, FC 4096 - FC num_classes."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size=(227, 227),
                 lrn: bool = False, dropout: float = 0.5, init: str = "kaiming"):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        # The paper: "response-normalization layers follow the first and second convolutional layers.
        # Max-pooling layers follow both response-normalization layers as well as the fifth".
        norm = (lambda: [make_lrn()]) if lrn else (lambda: [])
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 96, 11, stride=4), nn.ReLU(inplace=True), *norm(),
            nn.MaxPool2d(3, 2),                                    # overlapping pooling, z=3, s=2
            nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(inplace=True), *norm(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        ]
        self.features = nn.Sequential(*layers)
        # No adaptive pooling: the first FC is sized from the real geometry (256x6x6 at 227).
        self.avgpool = nn.Identity()
        c, h, w = checked_output_shape(self.features, (in_channels, *self.input_size), "AlexNet")
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(c * h * w, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))
        self.classifier_name = "classifier.6"
        init_weights(self, init)
        if init == "kaiming":  # hidden FCs He fan_in, the last N(0, 0.01): see init_fc_classifier
            init_fc_classifier(self.classifier)


@register_model("alexnet", "AlexNet (2012), single tower as the lectures count it: 5 conv + 3 FC on 227x227")
def alexnet(num_classes=1000, in_channels=3, input_size=(227, 227), lrn=False, dropout=0.5, init="kaiming"):
    return AlexNet(num_classes, in_channels, input_size, lrn=lrn, dropout=dropout, init=init)
