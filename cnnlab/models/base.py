"""The one interface every zoo model offers (after timm): analysis, transfer and visualisation use it
instead of poking into each architecture's internals."""

from __future__ import annotations

import torch
from torch import nn


class Stage(nn.Module):
    """A view of one named stage: the model's own modules at `paths` (shared, not copied), in forward order.

    Its parameters() are the stage's parameters, train()/eval() reach its BN layers, and `output` is the
    module whose output is the stage's output (where a forward hook taps the stage's activations)."""

    def __init__(self, name: str, paths: tuple[str, ...], modules: list[nn.Module]):
        super().__init__()
        self.name, self.paths = name, tuple(paths)
        self.parts = nn.ModuleList(modules)

    @property
    def output(self) -> nn.Module | None:
        return self.parts[-1] if len(self.parts) else None

    def extra_repr(self) -> str:
        return f"{self.name}: {', '.join(self.paths) or '(no layers)'}"


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
      - `stage_layout()`: the named stages as (name, module paths), with one meaning on every family:
        `stem`, `stage1` … `stageN`, `head`. Each stage works at one resolution and the resolution drops
        between stages (stageK of VGG and ResNet outputs 1/2^(K+1) of the input, as in the papers' tables),
        `head` is pooling + classifier, and the stages' parameters partition the model's (each parameter
        in exactly one stage).
    Builders set `num_classes`, `in_channels` and `input_size` (H, W).
    """

    classifier_name: str = "fc"

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

    def stage_layout(self) -> list[tuple[str, tuple[str, ...]]]:
        raise NotImplementedError

    @property
    def stage_names(self) -> tuple[str, ...]:
        """("stem", "stage1", …, "head")."""
        return tuple(name for name, _ in self.stage_layout())

    def stages(self) -> list[tuple[str, Stage]]:
        """The named stages, shallow to deep, as views of the model's own modules."""
        return [(name, Stage(name, paths, [self.get_submodule(p) for p in paths if self._present(p)]))
                for name, paths in self.stage_layout()]

    def get_stage(self, name: str) -> Stage:
        for stage_name, stage in self.stages():
            if stage_name == name:
                return stage
        raise KeyError(f"no stage {name!r}; stages: {', '.join(self.stage_names)}")

    def _present(self, path: str) -> bool:
        try:
            return self.get_submodule(path) is not None
        except AttributeError:
            return False


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

    def stage_layout(self) -> list[tuple[str, tuple[str, ...]]]:
        """The trunk cut after each pooling layer: the first group is the stem, the others stage1…; the
        head is avgpool (if any) + classifier. A fully connected net (no trunk) has its hidden layers as
        the stem and the output layer as the head."""
        groups = pool_groups(self.features)
        if not groups:
            last = len(self.classifier) - 1
            return [("stem", tuple(f"classifier.{i}" for i in range(last))), ("head", (f"classifier.{last}",))]
        head = (("avgpool",) if getattr(self, "avgpool", None) is not None else ()) + ("classifier",)
        return ([("stem", groups[0])] + [(f"stage{i}", g) for i, g in enumerate(groups[1:], start=1)]
                + [("head", head)])


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def pool_groups(features: nn.Sequential, prefix: str = "features.") -> list[tuple[str, ...]]:
    """A plain trunk's layers grouped so that each group ends at a pooling layer (where the resolution
    drops); layers after the last pooling layer form a final group."""
    groups: list[tuple[str, ...]] = []
    current: list[str] = []
    for i, m in enumerate(features):
        current.append(f"{prefix}{i}")
        if isinstance(m, _POOLS):
            groups.append(tuple(current))
            current = []
    if current:
        groups.append(tuple(current))
    return groups
