"""Shared building blocks of the zoo: activations by name, conv-norm-act blocks, stochastic depth,
initialisation, and the lectures' geometry arithmetic (W - F + 2P)/S + 1 with explained errors."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import ConfigError, GeometryError

# --- activations (the lectures' table) -------------------------------------------------------------

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "identity": nn.Identity,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": lambda: nn.ReLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "prelu": nn.PReLU,
    "elu": lambda: nn.ELU(inplace=True),
    "softplus": nn.Softplus,
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from its name in the lectures' table (`relu`, `tanh`, ...)."""
    key = name.lower().replace("-", "_")
    if key not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


# --- blocks ------------------------------------------------------------------------------------------

BLOCK_ORDERS = ("conv-bn-act", "conv-act-bn", "conv-act")


class ConvNormAct(nn.Sequential):
    """Conv2d followed by batch norm and an activation in a chosen order.

    `order` is one of BLOCK_ORDERS: conv-bn-act (the ResNet/Inception-v2 convention), conv-act-bn
    (BN after the non-linearity, as some practitioners prefer), or conv-act (no BN, the classic nets).
    The conv has no bias when BN directly follows it (BN's shift makes it redundant).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int | None = None,
                 groups: int = 1, dilation: int = 1, act: str = "relu", order: str = "conv-bn-act"):
        if order not in BLOCK_ORDERS:
            raise ConfigError(f"unknown block order {order!r}; known: {', '.join(BLOCK_ORDERS)}")
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        bias = order != "conv-bn-act"
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation=dilation, groups=groups,
                               bias=bias))]
        if order == "conv-bn-act":
            layers += [("bn", nn.BatchNorm2d(out_ch)), ("act", make_activation(act))]
        elif order == "conv-act-bn":
            layers += [("act", make_activation(act)), ("bn", nn.BatchNorm2d(out_ch))]
        else:
            layers += [("act", make_activation(act))]
        super().__init__(OrderedDict(layers))


DROP_PATH_MODES = ("batch", "sample")


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a whole residual branch with probability
    `drop_prob`, scaling survivors by 1/(1-p) so eval (identity) needs no rescale.

    `mode` "batch" draws one coin per mini-batch, as the paper ("for each mini-batch, randomly drop a
    subset of layers"); "sample" draws one per sample (timm's DropPath, a lower-variance estimate).
    The draw stays on the device (a mask multiply, no host sync)."""

    def __init__(self, drop_prob: float = 0.0, mode: str = "batch"):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ConfigError(f"stochastic-depth probability must be in [0, 1), got {drop_prob}")
        if mode not in DROP_PATH_MODES:
            raise ConfigError(f"unknown stochastic-depth mode {mode!r}; known: {', '.join(DROP_PATH_MODES)}")
        self.drop_prob = float(drop_prob)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        first = x.shape[0] if self.mode == "sample" else 1
        mask = x.new_empty((first,) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, mode={self.mode}"


# --- initialisation ------------------------------------------------------------------------------------

def init_weights(model: nn.Module, scheme: str = "kaiming") -> None:
    """Initialise conv/linear weights: `kaiming` (He et al. 2015, fan_out, for ReLU nets), `xavier`
    (Glorot & Bengio 2010, for tanh/sigmoid nets) or `default` (PyTorch's). Biases 0, BN weight 1."""
    if scheme == "default":
        return
    if scheme not in ("kaiming", "xavier"):
        raise ConfigError(f"unknown init {scheme!r}; known: kaiming, xavier, default")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_fc_classifier(classifier: nn.Module, last_std: float = 0.01) -> None:
    """Initialise a multi-layer FC classifier so a deep ReLU net starts learning at once: hidden Linear
    layers He fan_in (keeps the activations' scale through the 4096-wide layers), the last one N(0, 0.01)
    (the AlexNet paper's and torchvision VGG's draw) so the first logits are small and the first loss is
    about ln(K). Measured on VGG-11/-11-BN, digits at 32x32 (README "Training defaults"): He fan_out on
    the last FC (std sqrt(2/10)) gives VGG-11-BN logits with std ~26, a first loss of ~40 and chance-level
    accuracy; N(0, 0.01) on every FC (torchvision) shrinks VGG-11's logits to ~0.01 and it idles at chance
    for four epochs."""
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    for m in linears[:-1]:
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(m.bias)
    if linears:
        nn.init.normal_(linears[-1].weight, 0.0, last_std)
        nn.init.zeros_(linears[-1].bias)


# Tensor initialisers (nn.init and the in-place Tensor methods it calls) that meta_device() skips.
_INIT_OPS = frozenset({"normal_", "uniform_", "zero_", "fill_", "copy_", "trunc_normal_", "exponential_",
                       "bernoulli_", "random_", "orthogonal_", "kaiming_normal_", "kaiming_uniform_",
                       "xavier_normal_", "xavier_uniform_"})


class _SkipMetaInit(TorchFunctionMode):
    """Initialising a meta tensor is a no-op anyway, but some of it routes through torch._refs and
    imports torch._dynamo (seconds); return the tensor untouched instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _INIT_OPS:
            target = args[0] if args else kwargs.get("tensor")  # nn.init passes tensor= by keyword
            if getattr(target, "is_meta", False):
                return target
        return func(*args, **kwargs)


@contextmanager
def meta_device():
    """Build modules on PyTorch's meta device (shapes only: no memory, no initialisation cost), for
    parameter counts and shape analysis where weight values do not matter."""
    with torch.device("meta"), _SkipMetaInit():
        yield


# --- geometry ----------------------------------------------------------------------------------------

def pair(v) -> tuple[int, int]:
    """An int or a 1-/2-sequence (PyTorch's kernel_size, stride, ... forms) as an (h, w) pair of ints."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False, layer: str = "layer") -> int:
    """Output size along one axis: floor((W - F_eff + 2P)/S) + 1 with F_eff = D(F-1)+1.

    With ceil_mode (pooling) the division rounds up, as PyTorch does, less one if the last window would
    start beyond the input (so a window may overhang the far edge). Raises GeometryError naming the layer
    and the formula when the result is below 1."""
    f_eff = dilation * (kernel - 1) + 1
    num = size - f_eff + 2 * padding
    if ceil_mode:
        out = -(-num // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
    else:
        out = num // stride + 1 if num >= 0 else 0
    if out < 1:
        rounding = " rounded up" if ceil_mode else ""
        raise GeometryError(
            f"{layer}: kernel {kernel}, stride {stride}, padding {padding}"
            + (f", dilation {dilation}" if dilation != 1 else "")
            + f" on input size {size}: (W - F + 2P)/S + 1{rounding} = ({size} - {f_eff} + 2*{padding})/{stride} + 1"
            f" = {num / stride + 1:.2f} < 1; the input is too small for this layer")
    return out


def window(module: nn.Module) -> dict | None:
    """Kernel, stride, padding, dilation (as (h, w) pairs), groups and ceil_mode of a 2-D conv/pool
    module; None for any other module. A conv's string padding is resolved as PyTorch does for odd
    effective kernels ("valid" 0, "same" d(k-1)/2)."""
    if isinstance(module, nn.Conv2d):
        k, d = pair(module.kernel_size), pair(module.dilation)
        if isinstance(module.padding, str):
            pad = (0, 0) if module.padding == "valid" else tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        else:
            pad = pair(module.padding)
        return {"kernel": k, "stride": pair(module.stride), "padding": pad, "dilation": d,
                "groups": module.groups, "ceil_mode": False}
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = pair(module.kernel_size)
        return {"kernel": k, "stride": pair(module.stride if module.stride else module.kernel_size),
                "padding": pair(module.padding), "dilation": pair(getattr(module, "dilation", 1)),
                "groups": None, "ceil_mode": bool(module.ceil_mode)}
    return None


def module_output_shape(module: nn.Module, shape: tuple[int, int, int], name: str = "layer") -> tuple[int, int, int]:
    """(C, H, W) after one conv/pool module, by the lectures' arithmetic; other modules keep the shape
    (Flatten and Linear are not spatial and must not be passed here)."""
    c, h, w = shape
    if isinstance(module, nn.Conv2d) and isinstance(module.padding, str):
        raise GeometryError(f"{name}: string padding {module.padding!r} is not supported in geometry")
    win = window(module)
    if win is not None:
        label = f"{name} ({type(module).__name__})"
        k, s, p, d = (win[key] for key in ("kernel", "stride", "padding", "dilation"))
        out_c = module.out_channels if isinstance(module, nn.Conv2d) else c
        return (out_c,
                conv_output_size(h, k[0], s[0], p[0], d[0], win["ceil_mode"], layer=label),
                conv_output_size(w, k[1], s[1], p[1], d[1], win["ceil_mode"], layer=label))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        oh, ow = pair(module.output_size)
        return (c, oh if oh is not None else h, ow if ow is not None else w)
    if isinstance(module, nn.Sequential):
        return sequential_output_shape(module.named_children(), shape, prefix=name + ".")
    return shape


def sequential_output_shape(named_modules: Iterable[tuple[str, nn.Module]] | nn.Sequential,
                            shape: Sequence[int], prefix: str = "") -> tuple[int, int, int]:
    """(C, H, W) after a sequential feature stack, checking every conv/pool's geometry before any
    forward pass. Used to size fully connected heads from the real input size."""
    if isinstance(named_modules, nn.Module):
        named_modules = named_modules.named_children()
    out = tuple(int(v) for v in shape)
    for name, m in named_modules:
        out = module_output_shape(m, out, name=prefix + name)
    return out  # type: ignore[return-value]


# --- classic-net helpers (LeNet/AlexNet/VGG and the notation) ------------------------------------------

# Activations for which He (kaiming) init is the right variance argument; the others get Xavier.
_RELU_LIKE = ("relu", "leaky_relu", "prelu", "elu", "softplus")


def resolve_init(scheme: str, act: str) -> str:
    """`auto` -> `kaiming` for ReLU-like activations (He et al. 2015 derive it for ReLU), else `xavier`
    (Glorot & Bengio 2010 derive it for symmetric saturating units: tanh, sigmoid, identity)."""
    if scheme != "auto":
        return scheme
    return "kaiming" if act.lower().replace("-", "_") in _RELU_LIKE else "xavier"


def make_lrn() -> nn.LocalResponseNorm:
    """Local response normalisation with AlexNet's constants (n=5, k=2, alpha=1e-4, beta=0.75).

    PyTorch divides alpha by n inside the sum while Krizhevsky et al. (2012) do not, so the paper's
    alpha=1e-4 is passed as n * 1e-4 = 5e-4. VGG's A-LRN uses the same settings."""
    return nn.LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)


def checked_output_shape(features: nn.Sequential, shape: Sequence[int], model: str,
                         prefix: str = "features.") -> tuple[int, int, int]:
    """`sequential_output_shape` for a model's trunk, its GeometryError prefixed with the model and the
    input it was built for (the per-layer message only knows that layer's own input size)."""
    try:
        return sequential_output_shape(features, shape, prefix=prefix)
    except GeometryError as exc:
        raise GeometryError(f"{model} for {'x'.join(map(str, shape))} inputs: {exc}") from None
