"""Follow a model's real data flow on meta tensors: which layer ran, on what, producing what.

Counted modules (conv, linear, norm, activation, pool, ...; see flops.is_counted_module) are recorded by
forward hooks; everything else a forward does with the traced tensors (residual adds, torch.cat, F.relu,
flatten, ...) is seen by a TorchFunctionMode. Each traced tensor carries a ReceptiveField, so fields
follow the real graph: branches, merges and reuse, not an assumed sequential stack.

Each traced tensor also remembers which graph nodes produced it, so every Event lists its inputs and the
data-flow graph can be drawn: node ids are "input" (the image), "row:N" (events[N]) and "join:K"
(joins[K], a free merge such as an Inception torch.cat, which has no table row of its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from ..errors import GeometryError
from ..layers import conv_output_size, window
from . import receptive_field as rfm
from .flops import (ELEMENTWISE_OPS, WINDOW_OPS, call_window, count_function, count_module, is_counted_module,
                    op_name)


_META_SHAPE_KEEPERS = frozenset({F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, torch.batch_norm,
                                 F.local_response_norm,
                                 torch.layer_norm, torch.group_norm, torch.instance_norm})


_BINARY = frozenset("add sub rsub mul div true_divide maximum minimum pow".split())


def _broadcast(a: torch.Size, b: torch.Size) -> tuple[int, ...] | None:
    """NumPy broadcasting of two shapes (torch.broadcast_shapes imports symbolic shapes, ~0.3 s)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def _meta_window_output(func, args, kwargs) -> torch.Tensor | None:
    """The meta output of conv2d / max_pool2d / avg_pool2d on a 4-D input by (W - F + 2P)/S + 1: PyTorch's
    meta kernels check shapes with torch._check, whose first use imports sympy-based symbolic shapes
    (~0.3 s). None when the call is not plain enough to answer safely (PyTorch then runs it)."""
    name = op_name(func)
    win = call_window(name, args, kwargs)
    if win is None:
        return None
    x = args[0]
    k, st, p, d = (win[key] for key in ("kernel", "stride", "padding", "dilation"))
    if name == "conv2d":
        if x.shape[1] != win["cin_per_group"] * win["groups"]:
            return None  # wrong channel count: let PyTorch raise its error
        channels = win["out_channels"]
    elif any(2 * p[i] > k[i] for i in range(2)):
        return None  # PyTorch refuses padding beyond half the window; let it say so
    else:
        channels = x.shape[1]
    try:
        hw = [conv_output_size(int(x.shape[2 + i]), k[i], st[i], p[i], d[i], win["ceil_mode"]) for i in range(2)]
    except GeometryError:
        return None  # let PyTorch raise its own error for the too-small input
    return x.new_empty((x.shape[0], channels, *hw))


def _meta_shortcut(func, args, kwargs) -> torch.Tensor | None:
    """The output of a shape-keeping op on meta tensors without running it: PyTorch's meta path for
    batch norm and many elementwise ops goes through Python decompositions that import torch._dynamo
    (seconds on a small CPU). None when the op is not one of these or its inputs are not meta."""
    if func in (torch.cat, torch.concat) and args and isinstance(args[0], (list, tuple)) and args[0] \
            and all(isinstance(t, torch.Tensor) and t.is_meta and t.dim() == args[0][0].dim() for t in args[0]):
        parts = args[0]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % parts[0].dim()
        shape = list(parts[0].shape)
        shape[dim] = sum(t.shape[dim] for t in parts)
        return parts[0].new_empty(shape)
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_meta:
        return None
    x = args[0]
    windowed = _meta_window_output(func, args, kwargs)
    if windowed is not None:
        return windowed
    if func in _META_SHAPE_KEEPERS:
        stats = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else None
        if func in (F.batch_norm, torch.batch_norm) and stats is not None and stats.numel() != x.shape[1]:
            return None  # wrong channel count: let PyTorch raise its error
        return x.new_empty(x.shape)
    if func is F.linear and len(args) >= 2 and isinstance(args[1], torch.Tensor) \
            and args[1].dim() == 2 and x.shape[-1] == args[1].shape[1]:  # else let PyTorch raise
        return x.new_empty((*x.shape[:-1], args[1].shape[0]))
    if func in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and x.dim() >= 3 and len(args) >= 2 \
            and not kwargs.get("return_indices") and not (len(args) > 2 and args[2]):
        size = args[1]
        size = (size, size) if isinstance(size, int) or size is None else tuple(size)
        hw = tuple(x.shape[-2 + i] if v is None else int(v) for i, v in enumerate(size))
        return x.new_empty((*x.shape[:-2], *hw))
    if getattr(func, "__name__", "") in ("mean", "sum") and (len(args) > 1 or "dim" in kwargs):
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        keep = bool(kwargs.get("keepdim", args[2] if len(args) > 2 else False))
        if isinstance(dims, int):
            dims = (dims,)
        if isinstance(dims, (tuple, list)) and all(isinstance(d, int) for d in dims):
            dims = {d % x.dim() for d in dims}
            shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keep or i not in dims]
            return x.new_empty(shape)
    raw = getattr(func, "__name__", "")
    name = op_name(func)
    if name not in ELEMENTWISE_OPS or name == "where":
        return None
    if raw.endswith("_") and not raw.endswith("__") or raw.startswith("__i") or kwargs.get("inplace") is True:
        return x  # in-place: same tensor, same shape
    if name in _BINARY and len(args) >= 2:
        other = args[1]
        shape = _broadcast(x.shape, other.shape) if isinstance(other, torch.Tensor) else x.shape
        if shape is None:
            return None  # not broadcastable: let PyTorch raise its error
        return torch.empty(shape, dtype=torch.result_type(x, other), device="meta")
    return x.new_empty(x.shape)


@dataclass
class Event:
    """One executed layer or functional op, in execution order."""

    name: str
    kind: str
    module: nn.Module | None
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    macs: int | None
    flops: int | None
    rf: rfm.ReceptiveField
    window: dict | None = None
    fit_note: str | None = None
    out_bytes: int = 0
    extra: dict = field(default_factory=dict)
    inputs: tuple[str, ...] = ()  # graph node ids this op read (see the module docstring)


@dataclass
class Join:
    """A merge of several traced paths that costs nothing (torch.cat, stack): a node of the data-flow graph
    but no table row."""

    name: str
    op: str
    out_shape: tuple[int, ...]
    inputs: tuple[str, ...]


INPUT_NODE = "input"


def _tensors(obj) -> list[torch.Tensor]:
    """The tensors in a (nested) argument or output: a tensor, list, tuple or dict."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


class Tracer(TorchFunctionMode):
    """Records Events while a model runs once; see the module docstring."""

    def __init__(self, model: nn.Module, strict: bool = False):
        super().__init__()
        self.names = {id(m): n for n, m in model.named_modules()}
        self.strict = strict
        self.events: list[Event] = []
        self.fields: dict[int, tuple[torch.Tensor, rfm.ReceptiveField]] = {}
        self.stack: list[str] = []
        self.leaf: nn.Module | None = None  # the counted module now running (its inner ops are not traced)
        self.leaf_in: list[torch.Tensor] = []
        self.busy = False
        self.calls: dict[str, int] = {}
        self.uncounted: dict[str, int] = {}
        self._fit_note: str | None = None
        self.joins: list[Join] = []
        self.sources: dict[int, tuple[str, ...]] = {}  # id(tensor) -> graph nodes that produced it

    # --- tensor bookkeeping ---------------------------------------------------------------------------
    def mark(self, t: torch.Tensor, rf: rfm.ReceptiveField, sources: tuple[str, ...] = (INPUT_NODE,)) -> None:
        self.fields[id(t)] = (t, rf)  # keeps t alive so its id is not reused during the trace
        self.sources[id(t)] = sources

    def sources_of(self, tensors: list[torch.Tensor]) -> tuple[str, ...]:
        """The graph nodes that produced `tensors`, each once, in first-seen order."""
        return tuple(dict.fromkeys(s for t in tensors for s in self.sources.get(id(t), ())))

    def field_of(self, t: torch.Tensor) -> rfm.ReceptiveField | None:
        hit = self.fields.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else None

    def _unique(self, base: str) -> str:
        n = self.calls.get(base, 0) + 1
        self.calls[base] = n
        return base if n == 1 else f"{base}#{n}"

    # --- module hooks ---------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> list:
        handles = []
        for m in model.modules():
            handles.append(m.register_forward_pre_hook(self._pre))
            handles.append(m.register_forward_hook(self._post))
        return handles

    def _pre(self, module, inputs):
        self.busy = True
        try:
            self.stack.append(self.names.get(id(module), type(module).__name__))
            if self.leaf is None and is_counted_module(module):
                self.leaf = module
                self.leaf_in = [t for t in _tensors(inputs) if self.field_of(t) is not None]
                win = window(module)
                if win is not None and self.leaf_in and self.leaf_in[0].dim() == 4:
                    label = f"{self.names.get(id(module), '?')} ({type(module).__name__})"
                    self._fit_note = self._check_geometry(label, self.leaf_in[0], win)
        finally:
            self.busy = False

    def _post(self, module, inputs, output):
        self.busy = True
        try:
            name = self.stack.pop() if self.stack else type(module).__name__
            if module is not self.leaf:
                return
            self.leaf = None
            outs = _tensors(output)
            if not self.leaf_in or not outs:
                return
            x, y = self.leaf_in[0], outs[0]
            rf_in = rfm.merge([self.field_of(t) for t in self.leaf_in])
            win = window(module)
            if win is not None and y.dim() == 4:
                rf_out = rfm.through_window(rf_in, win["kernel"], win["stride"], win["padding"], win["dilation"])
            elif isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and y.dim() == 4:
                rf_out = rfm.through_adaptive(rf_in, tuple(x.shape[-2:]), tuple(y.shape[-2:]))
            elif isinstance(module, (nn.Linear, nn.Flatten)) or (x.dim() == 4 and y.dim() < 4):
                rf_out = rfm.GLOBAL if not rf_in.unknown else rf_in
            else:
                rf_out = rf_in
            inputs = self.sources_of(self.leaf_in)
            for t in outs:
                self.mark(t, rf_out, (f"row:{len(self.events)}",))
            macs, flops = count_module(module, x.numel(), tuple(y.shape))
            self.events.append(Event(
                self._unique(name), type(module).__name__, module, tuple(x.shape), tuple(y.shape), macs, flops,
                rf_out, win, self._fit_note, y.numel() * y.element_size(), inputs=inputs))
            self._fit_note = None
        finally:
            self.busy = False

    def _check_geometry(self, label: str, x: torch.Tensor, win: dict) -> str | None:
        """The lectures' checks on a conv/pool window over `x`: output size >= 1 (else GeometryError) and
        exact tiling; returns the "does not fit" note (a GeometryError instead with strict), or None."""
        notes: dict[str, list[str]] = {}
        for ax, size in enumerate(x.shape[-2:]):
            k, s, p, d = (win[key][ax] for key in ("kernel", "stride", "padding", "dilation"))
            conv_output_size(int(size), k, s, p, d, win["ceil_mode"], layer=label)  # raises GeometryError
            ok, exact = rfm.fits(int(size), k, s, p, d)
            if not ok:
                rounded = -(-exact // 1) if win["ceil_mode"] else exact // 1
                notes.setdefault(f"({int(size)} - {d * (k - 1) + 1} + 2*{p})/{s} + 1 = {exact:.2f}, "
                                 f"{'ceil' if win['ceil_mode'] else 'floor'}ed to {int(rounded)}", []).append("HW"[ax])
        note = "; ".join(f"{txt} ({'H and W' if len(axes) == 2 else axes[0]})" for txt, axes in notes.items())
        if note and self.strict:
            raise GeometryError(f"{label} does not fit: (W - F + 2P)/S + 1 = {note}: the stride "
                                "does not tile the padded input (--strict)")
        return note or None

    # --- functional ops -------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = _meta_shortcut(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if self.busy or self.leaf is not None:
            return out
        ins = [t for t in _tensors(args) + _tensors(kwargs) if self.field_of(t) is not None]
        outs = [t for t in _tensors(out) if self.field_of(t) is None or t is (ins[0] if ins else None)]
        if not ins or not outs:
            return out
        self.busy = True
        try:
            self._record_function(func, args, kwargs, ins, outs)
        finally:
            self.busy = False
        return out

    def _record_function(self, func, args, kwargs, ins: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
        """One Event for a functional op on traced tensors (free data movement records nothing)."""
        name = op_name(func)
        x, y = ins[0], outs[0]
        rf_in = rfm.merge([self.field_of(t) for t in ins])
        win = call_window(name, args, kwargs) if name in WINDOW_OPS else None
        kind, macs, flops = count_function(name, [tuple(t.shape) for t in ins], tuple(y.shape))
        if win is not None:
            rf_out = rfm.through_window(rf_in, win["kernel"], win["stride"], win["padding"], win["dilation"])
            kind, k2 = "row", win["kernel"][0] * win["kernel"][1]
            if name == "conv2d":
                macs = y.numel() * win["cin_per_group"] * k2
                flops = 2 * macs
            else:
                macs, flops = 0, y.numel() * (k2 - 1 if name == "max_pool2d" else k2)
        elif name in WINDOW_OPS or (y.dim() == 4 and x.dim() == 4 and tuple(y.shape[-2:]) != tuple(x.shape[-2:])):
            rf_out = rfm.UNKNOWN  # a window we could not read, or a resize we do not model (interpolate, crop)
        elif y.dim() < 4 <= x.dim() or name in ("linear", "matmul", "mm", "addmm"):
            rf_out = rfm.GLOBAL if not rf_in.unknown else rf_in
        else:
            rf_out = rf_in
        inputs = self.sources_of(ins)
        if kind == "free":
            if len(inputs) > 1:  # a merge (torch.cat of Inception branches): a graph node, no row
                parent = self.stack[-1] if self.stack else ""
                self.joins.append(Join(f"{parent}.{name}" if parent else name, name, tuple(y.shape), inputs))
                inputs = (f"join:{len(self.joins) - 1}",)
            for t in outs:
                self.mark(t, rf_out, inputs)
            return
        for t in outs:
            self.mark(t, rf_out, (f"row:{len(self.events)}",))
        if kind == "uncounted":
            self.uncounted[name] = self.uncounted.get(name, 0) + 1
        parent = self.stack[-1] if self.stack else ""
        row_name = self._unique(f"{parent}.{name}" if parent else name)
        note = self._check_geometry(row_name, x, win) if win is not None else None
        if win is not None:
            win = {key: win[key] for key in ("kernel", "stride", "padding", "dilation", "groups", "ceil_mode")}
        self.events.append(Event(row_name, name, None, tuple(x.shape), tuple(y.shape), macs, flops, rf_out, win,
                                 note, y.numel() * y.element_size(), inputs=inputs))
