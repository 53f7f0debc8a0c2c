"""`summarize(model, input_size)`: the lectures' arithmetic for every layer of any model, exactly.

Shapes come from one forward pass on meta tensors (no real compute, no memory), parameters from the
model itself (shared ones counted once), MACs/FLOPs from the rules in `flops`, receptive fields from the
real data flow (`trace`). The model is left as it was: device, train/eval flags and buffers unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..errors import CnnlabError, ConfigError, GeometryError
from . import receptive_field as rfm
from .flops import CONVENTIONS, is_counted_module
from .trace import Event, Tracer

SCHEMA_VERSION = 1


@dataclass
class LayerRow:
    """One row of the per-layer table; `ran` is False for parameters no forward pass used."""

    name: str
    type: str
    kernel: list[int] | None
    stride: list[int] | None
    padding: list[int] | None
    dilation: list[int] | None
    groups: int | None
    input_shape: list[int] | None
    output_shape: list[int] | None
    params: int
    trainable: int
    frozen: int
    macs: int | None
    flops: int | None
    receptive_field: dict
    activation_bytes: int
    fit: str | None = None
    ran: bool = True


@dataclass
class Summary:
    """Per-layer rows, totals and shares by layer type, geometry flags and uncounted ops."""

    model: str
    input_size: tuple[int, int, int]
    layers: list[LayerRow]
    totals: dict
    by_type: list[dict]
    flags: list[str] = field(default_factory=list)
    uncounted: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    conventions: str = CONVENTIONS
    # The traced data-flow graph, kept out of to_dict() (schema unchanged): (source, destination) node ids,
    # "input", "row:N" (layers[N]) or "join:K" (joins[K]: a free merge such as torch.cat, with no row).
    edges: list[tuple[str, str]] = field(default_factory=list)
    joins: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The stable JSON document (schema in README, version SCHEMA_VERSION)."""
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "input_size": list(self.input_size),
                "batch_size": 1, "conventions": self.conventions, "layers": [asdict(r) for r in self.layers],
                "totals": self.totals, "by_type": self.by_type, "flags": self.flags,
                "uncounted": self.uncounted, "notes": self.notes}

    def render(self, fmt: str = "table") -> str:
        from .render import render

        return render(self, fmt)

    def __str__(self) -> str:
        return self.render("table")


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back every module's train/eval flag as recorded before the analysis."""
    for m, training in modes:
        m.training = training


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    """(C, H, W) as given, or the model's declared input; a one-line ConfigError otherwise."""
    if input_size is None:
        if hasattr(model, "input_size") and hasattr(model, "in_channels"):
            return (int(model.in_channels), *(int(v) for v in model.input_size))  # type: ignore[return-value]
        raise ConfigError("give input_size=(C, H, W): this model does not declare its input size")
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input size must be three positive numbers C, H, W, got {input_size!r}")
    return size  # type: ignore[return-value]


@contextmanager
def _meta_weights(model: nn.Module):
    """Temporarily swap every parameter and buffer for a meta stand-in (same shape, no data), restoring
    the originals exactly afterwards. Shared tensors get one shared stand-in. (torch.func.functional_call
    does not restore modules that appear twice in a model, hence this.)"""
    saved: list[tuple[dict, str, torch.Tensor]] = []
    stand_in: dict[int, torch.Tensor] = {}
    for m in {id(m): m for m in model.modules()}.values():
        for store in (m._parameters, m._buffers):
            for key, t in store.items():
                if t is None or t.is_meta:
                    continue
                if id(t) not in stand_in:
                    meta = torch.empty_like(t, device="meta")
                    stand_in[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
                saved.append((store, key, t))
                store[key] = stand_in[id(t)]
    try:
        yield
    finally:
        for store, key, t in saved:
            store[key] = t


def _run(model: nn.Module, size: tuple[int, int, int], strict: bool, device: str) -> tuple[Tracer, object]:
    """One traced forward pass on `device` ("meta", or "cpu" for models meta cannot run)."""
    tracer = Tracer(model, strict=strict)
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    x = torch.zeros((1, *size), device=device, dtype=dtype)
    tracer.mark(x, rfm.INPUT)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    on_meta = all(t.is_meta for t in state.values())
    handles = tracer.attach(model)
    try:
        with torch.no_grad(), tracer:
            if device == "meta" and not on_meta:
                with _meta_weights(model):
                    out = model(x)
            else:
                out = model(x)
    finally:
        for h in handles:
            h.remove()
    return tracer, out


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PyTorch's are long), for a one-line error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def summarize(model: nn.Module, input_size=None, *, strict: bool = False, name: str | None = None) -> Summary:
    """Analyse `model` on one image of `input_size` (C, H, W; default: the model's declared input).

    `strict=True` turns "does not fit" geometry flags (a stride that does not tile the padded input)
    into GeometryError. Raises CnnlabError (one line) when the model cannot run on that input."""
    size = _input_size(model, input_size)
    shown = "x".join(map(str, size))
    modes = [(m, m.training) for m in model.modules()]
    notes: list[str] = []
    model.eval()  # inference conventions: dropout off, BN folded; flags restored below
    try:
        try:
            tracer, out = _run(model, size, strict, "meta")
        except GeometryError:
            raise
        except (RuntimeError, NotImplementedError) as exc:
            meta_err = _first_line(exc)
            if any(p.is_meta for p in model.parameters()):
                raise CnnlabError(f"cannot analyse this model on input {shown}: {meta_err}") from None
            try:
                tracer, out = _run(model, size, strict, "cpu")
            except GeometryError:
                raise
            except (RuntimeError, NotImplementedError, ValueError) as exc2:
                raise CnnlabError(f"the model cannot run on input {shown}: {_first_line(exc2)}") from None
            notes.append(f"meta-tensor tracing failed ({meta_err}); shapes came from a real forward on zeros")
    finally:
        _restore_modes(modes)
    return _build(model, size, tracer, out, notes, name or type(model).__name__)


def _params_of(module: nn.Module, seen: set[int], recurse: bool = True) -> tuple[int, int]:
    """(trainable, frozen) parameter counts of `module` not yet in `seen` (shared ones count once)."""
    trainable = frozen = 0
    for p in module.parameters(recurse=recurse):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def _row(ev: Event, seen: set[int]) -> LayerRow:
    """The table row of one traced layer or functional op."""
    trainable, frozen = _params_of(ev.module, seen) if ev.module is not None else (0, 0)
    win = ev.window or {}
    get = (lambda k: list(win[k]) if k in win else None)
    return LayerRow(ev.name, ev.kind, get("kernel"), get("stride"), get("padding"), get("dilation"),
                    win.get("groups"), list(ev.in_shape or []), list(ev.out_shape or []), trainable + frozen,
                    trainable, frozen, ev.macs, ev.flops, ev.rf.to_dict(), ev.out_bytes, ev.fit_note)


def _unrun_rows(model: nn.Module, seen: set[int], notes: list[str]) -> list[LayerRow]:
    """Rows for parameters no traced layer claimed: modules the forward pass never used (e.g. auxiliary
    heads in eval mode) and parameters held directly by a container (used by functional calls). They are
    part of the model's total, so they get rows of their own, marked ran=False."""
    rows = []
    for mod_name, m in model.named_modules():
        counted = is_counted_module(m)
        trainable, frozen = _params_of(m, seen, recurse=counted)
        if trainable + frozen:
            rows.append(LayerRow(mod_name or "(model)", type(m).__name__, None, None, None, None, None, None,
                                 None, trainable + frozen, trainable, frozen, None, None,
                                 rfm.UNKNOWN.to_dict(), 0, None, ran=False))
            if counted:
                notes.append(f"{mod_name} ({type(m).__name__}) did not run in the forward pass; its "
                             "parameters count, its operations do not")
    return rows


def _by_type(rows: list[LayerRow], total_params: int, total_flops: int) -> list[dict]:
    """Count, parameters, MACs and FLOPs per layer type with their shares, most parameters first."""
    groups: dict[str, dict] = defaultdict(lambda: {"count": 0, "params": 0, "macs": 0, "flops": 0})
    for r in rows:
        g = groups[r.type]
        g["count"] += 1
        g["params"] += r.params
        g["macs"] += r.macs or 0
        g["flops"] += r.flops or 0
    return [{"type": t, **g, "params_share": g["params"] / total_params if total_params else 0.0,
             "flops_share": g["flops"] / total_flops if total_flops else 0.0}
            for t, g in sorted(groups.items(), key=lambda kv: (-kv[1]["params"], -kv[1]["flops"]))]


def _build(model, size, tracer: Tracer, out, notes: list[str], name: str) -> Summary:
    """Rows, totals, shares and flags from one traced forward pass."""
    seen: set[int] = set()
    rows = [_row(ev, seen) for ev in tracer.events]
    rows += _unrun_rows(model, seen, notes)
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    assert total == sum(r.params for r in rows), "every parameter belongs to exactly one row"
    macs = sum(r.macs for r in rows if r.macs is not None)
    flops = sum(r.flops for r in rows if r.flops is not None)
    outs = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if isinstance(t, torch.Tensor)]
    out_rf = tracer.field_of(outs[0]) if outs else None
    spatial = [ev.rf for ev in tracer.events if not ev.rf.is_global and not ev.rf.unknown]
    largest = max(spatial, key=lambda f: f.size[0] * f.size[1]) if spatial else None
    totals = {
        "params": total, "trainable": trainable, "frozen": total - trainable,
        "param_bytes": sum(p.numel() * p.element_size() for p in unique),
        "macs": macs, "flops": flops, "uncounted_ops": sum(tracer.uncounted.values()),
        "activation_bytes": sum(r.activation_bytes for r in rows),
        "output_shape": list(outs[0].shape) if outs else None,
        "output_receptive_field": (out_rf or rfm.UNKNOWN).to_dict(),
        "largest_spatial_receptive_field": largest.to_dict() if largest else None,
    }
    flags = [f"{r.name} ({r.type}) does not fit: (W - F + 2P)/S + 1 = {r.fit}" for r in rows if r.fit]
    edges = [(src, f"row:{i}") for i, ev in enumerate(tracer.events) for src in ev.inputs]
    edges += [(src, f"join:{k}") for k, j in enumerate(tracer.joins) for src in j.inputs]
    joins = [{"name": j.name, "op": j.op, "output_shape": list(j.out_shape)} for j in tracer.joins]
    return Summary(name, size, rows, totals, _by_type(rows, total, flops), flags, dict(tracer.uncounted), notes,
                   edges=edges, joins=joins)
