"""Batch-norm folding. At test time BN is a fixed per-channel affine map y = γ(x − μ)/√(σ² + ε) + β (the
lectures: "during testing batchnorm becomes a linear operator! Can be fused with the previous
fully-connected or conv layer"), so a BN whose input is exactly a convolution's (or linear layer's)
output is folded into that layer's weight and bias and replaced by an identity:
W' = W·γ/√(σ² + ε) per output channel, b' = (b − μ)·γ/√(σ² + ε) + β (PyTorch's own
torch.nn.utils.fusion formulas).

Which BN follows which layer is read from the model's data flow (a torch.fx trace), not guessed from
attribute names, so it covers ConvNormAct, ResNet blocks and their projection shortcuts, VGG-BN,
GoogLeNet's BasicConv2d, MobileNet and notation nets alike. A BN that follows anything else (an
activation: conv-act-bn; a sum; a concatenation), or whose conv output is also used elsewhere, is left
as it is, with a note."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..errors import CnnlabWarning

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)
_TARGETS = {nn.BatchNorm2d: nn.Conv2d, nn.BatchNorm1d: nn.Linear}


@dataclass
class FuseResult:
    """The folded model (eval mode) and what was done: folded (layer path, BN path) pairs, BNs left as
    they are with the reason, and the count of computing layers (leaf modules other than identities)."""

    model: nn.Module
    folded: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[str, str]] = field(default_factory=list)
    layers_before: int = 0
    layers_after: int = 0

    @property
    def notes(self) -> list[str]:
        return [f"{bn} left unfolded: {why}" for bn, why in self.left]


class _LeafTracer(fx.Tracer):
    """Trace through containers; any module without children (conv, BN, activations, a custom
    parameter-free op such as a zero-padding shortcut) is one node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, qualname)


def count_layers(model: nn.Module) -> int:
    """Leaf modules that compute something (identities excluded)."""
    return sum(1 for m in model.modules() if next(m.children(), None) is None and not isinstance(m, nn.Identity))


def _describe(node, modules: dict) -> str:
    if isinstance(node, fx.Node):
        if node.op == "call_module":
            return f"{node.target} ({type(modules[node.target]).__name__})"
        if node.op in ("call_function", "call_method"):
            return f"a {getattr(node.target, '__name__', node.target)} operation"
        if node.op == "placeholder":
            return "the model input"
    return "a non-layer value"


def _pairs_from_graph(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(foldable (layer, bn) pairs, [(bn, reason)]) from the traced data flow."""
    graph = _LeafTracer().trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, left = [], []
    seen = set()
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], _BN) or node.target in seen:
            continue
        seen.add(node.target)
        bn, src = modules[node.target], node.args[0] if node.args else None
        layer_type = _TARGETS[type(bn)]
        reason = _bn_problem(bn, calls[node.target])
        if reason is None:
            if not (isinstance(src, fx.Node) and src.op == "call_module"
                    and isinstance(modules[src.target], layer_type)):
                reason = f"it follows {_describe(src, modules)}, not a {layer_type.__name__}"
            elif len(src.users) != 1:
                reason = f"the output of {src.target} is also used elsewhere"
            elif calls[src.target] != 1:
                reason = f"{src.target} is called more than once"
            elif _width(modules[src.target]) != bn.num_features:
                reason = f"{src.target} has {_width(modules[src.target])} outputs, the BN {bn.num_features}"
        if reason is None:
            pairs.append((src.target, node.target))
        else:
            left.append((node.target, reason))
    return pairs, left


def _pairs_from_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    """Fallback for a model torch.fx cannot trace: only BNs right after a conv/linear inside an nn.Sequential."""
    pairs = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            kids = list(module.named_children())
            for (a, first), (b, second) in zip(kids, kids[1:]):
                if isinstance(second, _BN) and isinstance(first, _TARGETS[type(second)]) \
                        and _bn_problem(second, 1) is None and _width(first) == second.num_features:
                    prefix = f"{name}." if name else ""
                    pairs.append((prefix + a, prefix + b))
    return pairs


def _width(layer: nn.Module) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _bn_problem(bn: nn.Module, calls: int) -> str | None:
    if not bn.track_running_stats or bn.running_mean is None:
        return "it normalises with batch statistics at test time (track_running_stats=False)"
    if calls != 1:
        return "it is called more than once"
    return None


def _fold(layer: nn.Module, bn: nn.Module) -> None:
    """Fold `bn` (eval statistics) into `layer`'s weight and bias, in place."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    gamma = bn.weight if bn.affine else torch.ones_like(bn.running_var)
    beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    fuse = fuse_conv_bn_weights if isinstance(layer, nn.Conv2d) else fuse_linear_bn_weights
    with torch.no_grad():
        weight, bias = fuse(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, gamma, beta)
    layer.weight, layer.bias = weight, bias


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> FuseResult:
    """Fold every foldable BatchNorm of `model` (a copy unless `inplace`; eval mode) into the conv or linear
    layer before it; see the module docstring. Returns the model and a record of what was done."""
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    before = count_layers(model)
    try:
        pairs, left = _pairs_from_graph(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types for untraceable Python
        pairs = _pairs_from_sequentials(model)
        folded_bns = {bn for _, bn in pairs}
        left = [(name, f"the model could not be traced ({type(exc).__name__}), and it is not right after a "
                       f"conv/linear layer in an nn.Sequential")
                for name, m in model.named_modules() if isinstance(m, _BN) and name not in folded_bns]
    for layer_path, bn_path in pairs:
        _fold(model.get_submodule(layer_path), model.get_submodule(bn_path))
        _replace(model, bn_path, nn.Identity())
    return FuseResult(model, pairs, left, before, count_layers(model))


def fuse_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """`model` with every BatchNorm that follows a conv or linear layer folded into it (a copy unless
    `inplace`, in eval mode); each BN left as it is is named in a CnnlabWarning note."""
    result = fold_batchnorm(model, inplace)
    for note in result.notes:
        warnings.warn(note, CnnlabWarning, stacklevel=2)
    return result.model
