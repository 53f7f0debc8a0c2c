"""The one interface every zoo model offers (after timm): analysis, transfer and visualisation use it
instead of poking into each architecture's internals."""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """Base class of cnnlab's models.

    A subclass builds its layers under whatever attribute names its paper/torchvision uses (so official
    state dicts load unchanged) and implements:
      - `forward_features(x)`: the convolutional trunk, returning the last feature map (N, C, H, W)
        (or flattened features for fully connected nets);
      - `forward_head(x, pre_logits=False)`: pooling/flatten + classifier; with pre_logits=True, the
        vector fed to the final linear layer (what transfer learning extracts);
      - `classifier_name`: attribute path of the final nn.Linear (e.g. "fc" or "classifier.6"),
        used by `get_classifier` / `reset_classifier`;
      - `stage_names`: attribute paths of the named stages, shallow to deep (e.g. "layer1".."layer4"),
        where visualisation taps activations and transfer learning freezes/unfreezes.
    Builders set `num_classes`, `in_channels` and `input_size` (H, W).
    """

    classifier_name: str = "fc"
    stage_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.num_classes = 0
        self.in_channels = 3
        self.input_size: tuple[int, int] = (224, 224)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer with a freshly initialised one for `num_classes` outputs."""
        self._replace_linear(self.classifier_name, num_classes)
        self.num_classes = num_classes

    def _replace_linear(self, path: str, out_features: int) -> None:
        """Swap the nn.Linear at attribute `path` for a fresh one with `out_features` outputs (same
        inputs, bias, device and dtype)."""
        old = self.get_submodule(path)
        new = nn.Linear(old.in_features, out_features, bias=old.bias is not None)
        parent_name, _, attr = path.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, attr, new.to(old.weight.device, old.weight.dtype))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The named stages, shallow to deep."""
        return [(n, self.get_submodule(n)) for n in self.stage_names]


class SequentialNet(ConvNet):
    """A ConvNet that is an `nn.Sequential` trunk `features` then an `nn.Sequential` `classifier` whose
    last layer is the final nn.Linear (LeNet, AlexNet, VGG, notation nets). An `avgpool` module, where a
    subclass has one (torchvision's AlexNet/VGG layout), runs between the two, before flattening."""

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pool = getattr(self, "avgpool", None)
        x = torch.flatten(x if pool is None else pool(x), 1)
        return self.classifier[:-1](x) if pre_logits else self.classifier(x)


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def pool_stage_names(features: nn.Sequential, prefix: str = "features.") -> tuple[str, ...]:
    """Stage names of a plain trunk: a stage ends where the resolution drops (at each pooling layer),
    and the trunk's last layer closes the final stage."""
    ends = [f"{prefix}{i}" for i, m in enumerate(features) if isinstance(m, _POOLS)]
    if len(features) and f"{prefix}{len(features) - 1}" not in ends:
        ends.append(f"{prefix}{len(features) - 1}")
    return tuple(ends)
