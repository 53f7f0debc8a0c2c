"""Counting rules: multiply-accumulates (MACs) and FLOPs of each layer type, per image, at inference.

Conventions (also printed with every summary, see CONVENTIONS):
  - conv: MACs = (D_in/groups)·F_h·F_w · D_out·H_out·W_out; linear: MACs = in·out.
  - FLOPs = 2·MACs for conv/linear: the lectures' [(D_1·F²) + (D_1·F² − 1) + 1] per output, i.e. the
    n multiplies, n − 1 adds and the bias add folded in (also used for bias-free layers).
  - batch norm / group norm / layer norm: 2 FLOPs per output element (scale and shift: at inference
    the statistics are folded into an affine map); local response norm: 2·size + 3 per element.
  - activations (ReLU, tanh, sigmoid, ...): 1 FLOP per output element.
  - max pooling: F_h·F_w − 1 comparisons per output; average pooling: F_h·F_w (adds and one divide);
    adaptive/global average pooling: one per input element.
  - residual add, elementwise multiply (gating): 1 FLOP per output element.
  - concat, flatten, reshape, dropout and identity at inference: 0 FLOPs (data movement).
  - anything else is listed as uncounted (FLOPs shown as "?"), never silently counted as zero.
"""

from __future__ import annotations

from math import prod

from torch import nn

from ..layers import pair

CONVENTIONS = (
    "Counted per image (batch 1) at inference (eval mode). MACs: multiply-accumulates of conv/linear "
    "layers. FLOPs = 2 x MACs for conv/linear (the lectures' (2*D_in*F^2)*D_out*H_out*W_out, bias add "
    "folded in); BN/norm 2 per element; activations 1 per element; max pool F*F-1 and avg pool F*F per "
    "output; global avg pool 1 per input; residual add/gating multiply 1 per element; concat, "
    "flatten, dropout, identity 0. Uncountable ops are listed, not counted as 0.")

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
                nn.Softsign, nn.Tanhshrink, nn.Softmax, nn.LogSoftmax, nn.Threshold)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)
_FREE_MODULES = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.AlphaDropout, nn.Identity, nn.Flatten,
                 nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad2d, nn.ChannelShuffle)
_ADAPTIVE_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)

COUNTED_MODULES = ((nn.Conv2d, nn.Conv1d, nn.Linear) + _ACTIVATIONS + _NORMS + _FREE_MODULES
                   + (nn.MaxPool2d, nn.AvgPool2d) + _ADAPTIVE_POOLS + (nn.LocalResponseNorm,))


def is_counted_module(module: nn.Module) -> bool:
    """Modules counted as one row; other modules are transparent (their inner ops are counted)."""
    return isinstance(module, COUNTED_MODULES)


_CALL_PARAMS = {
    "conv2d": ("weight", "bias", "stride", "padding", "dilation", "groups"),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}
WINDOW_OPS = frozenset(_CALL_PARAMS)


def call_window(name: str, args: tuple, kwargs: dict) -> dict | None:
    """window() for a functional F.conv2d / F.max_pool2d / F.avg_pool2d call on a 4-D input (`name` as
    op_name gives it), reading positional and keyword arguments alike. Conv windows also carry
    `cin_per_group` and `out_channels`. None for other calls and for calls not plain enough to read
    exactly (a "same" padding with an even effective kernel, pooling indices, malformed arguments:
    PyTorch then computes or rejects them itself)."""
    keys = _CALL_PARAMS.get(name)
    if keys is None or not args or getattr(args[0], "ndim", 0) != 4:
        return None
    params = {**dict(zip(keys, args[1:])), **kwargs}
    try:
        if name == "conv2d":
            w = params.get("weight")
            if getattr(w, "ndim", 0) != 4:
                return None
            kernel, dilation = pair(tuple(w.shape[-2:])), pair(params.get("dilation", 1))
            stride, padding = pair(params.get("stride", 1)), params.get("padding", 0)
            if isinstance(padding, str):  # "same" is symmetric only for odd effective kernels, stride 1 only
                if padding == "valid":
                    padding = 0
                elif padding == "same" and stride == (1, 1) and all(d * (k - 1) % 2 == 0
                                                                    for k, d in zip(kernel, dilation)):
                    padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
                else:
                    return None
            groups = params.get("groups", 1)
            if not isinstance(groups, int):
                return None
            return {"kernel": kernel, "stride": stride, "padding": pair(padding),
                    "dilation": dilation, "groups": groups, "ceil_mode": False,
                    "cin_per_group": int(w.shape[1]), "out_channels": int(w.shape[0])}
        if params.get("return_indices"):
            return None
        kernel = pair(params["kernel_size"])
        stride = params.get("stride")
        return {"kernel": kernel, "stride": pair(stride) if stride else kernel,
                "padding": pair(params.get("padding", 0)), "dilation": pair(params.get("dilation", 1)),
                "groups": None, "ceil_mode": bool(params.get("ceil_mode", False))}
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def count_module(module: nn.Module, in_numel: int, out_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
    """(MACs, FLOPs) of one call of a counted module, per image (shapes include batch 1)."""
    out_numel = prod(out_shape)
    if isinstance(module, (nn.Conv2d, nn.Conv1d)):
        macs = out_numel * (module.in_channels // module.groups) * prod(module.kernel_size)
        return macs, 2 * macs
    if isinstance(module, nn.Linear):
        macs = out_numel * module.in_features
        return macs, 2 * macs
    if isinstance(module, _NORMS):
        return 0, 2 * out_numel
    if isinstance(module, nn.LocalResponseNorm):
        return 0, (2 * module.size + 3) * out_numel
    if isinstance(module, _ACTIVATIONS):
        return 0, out_numel
    if isinstance(module, nn.MaxPool2d):
        return 0, (prod(pair(module.kernel_size)) - 1) * out_numel
    if isinstance(module, nn.AvgPool2d):
        return 0, prod(pair(module.kernel_size)) * out_numel
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return 0, in_numel
    if isinstance(module, nn.AdaptiveMaxPool2d):
        return 0, max(in_numel - out_numel, 0)
    if isinstance(module, _FREE_MODULES):
        return 0, 0
    return None, None


# --- functional ops (outside counted modules): residual adds, F.relu, torch.flatten, torch.cat, ... ---

# Pure data movement / metadata: no row, no cost; the receptive field passes through (or merges, for cat).
FREE_OPS = frozenset("""
    view reshape flatten unflatten permute transpose t contiguous getitem clone detach to type float half
    double squeeze unsqueeze expand expand_as repeat chunk split split_with_sizes unbind narrow select
    cat concat concatenate stack size dim shape get numel new_empty new_zeros new_ones empty_like zeros_like
    ones_like dropout feature_alpha_dropout alpha_dropout dropout2d identity requires_grad_ setitem
    len iter movedim swapaxes pad constant_pad_nd channel_shuffle pixel_shuffle pixel_unshuffle is_floating_point
    element_size dtype device ndim is_contiguous data_ptr stride storage_offset layout is_complex
""".split())
# One FLOP per output element.
ELEMENTWISE_OPS = frozenset("""
    add sub rsub mul div true_divide neg relu relu6 leaky_relu elu selu celu gelu silu mish hardswish
    hardsigmoid hardtanh sigmoid tanh softplus clamp clamp_min clamp_max clip exp log sqrt rsqrt abs
    pow softmax log_softmax threshold maximum minimum where prelu square
""".split())
# One FLOP per input element (sums/means over an axis, global pooling).
REDUCTION_OPS = frozenset("mean sum adaptive_avg_pool2d adaptive_avg_pool1d amax max min norm".split())


def op_name(func) -> str:
    """A normalised name for a torch function or Tensor method: `__iadd__` -> add, `relu_` -> relu."""
    name = getattr(func, "__name__", str(func))
    if name == "__get__":  # Tensor properties (x.shape, x.dtype)
        return "get"
    core = name.strip("_")
    if name.startswith("__") and core[:1] in ("i", "r") and core[1:] in ("add", "sub", "mul", "truediv", "div",
                                                                       "matmul", "pow"):
        core = core[1:]
    return {"truediv": "div", "getitem": "getitem", "setitem": "setitem"}.get(core, core)


def count_function(name: str, in_shapes: list[tuple[int, ...]], out_shape: tuple[int, ...]
                   ) -> tuple[str, int | None, int | None]:
    """("free" | "row" | "uncounted", MACs, FLOPs) of one functional op on traced tensors."""
    out_numel = prod(out_shape)
    if name in FREE_OPS:
        return "free", 0, 0
    if name in ELEMENTWISE_OPS:
        return "row", 0, out_numel
    if name in REDUCTION_OPS:
        return "row", 0, max((prod(s) for s in in_shapes), default=0)
    if name in ("linear", "matmul", "mm", "addmm", "bmm") and in_shapes:
        macs = out_numel * in_shapes[0][-1]
        return "row", macs, 2 * macs
    return "uncounted", None, None
