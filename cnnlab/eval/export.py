"""`export_run`: a run's model as a file other programs load — ONNX (run by onnxruntime), TorchScript, or
safetensors weights — always in eval mode, with a dynamic batch axis, optionally with batch norm folded
(`fuse_bn`) and in channels-last memory format. The class names and preprocessing travel with the file
(ONNX metadata "cnnlab", TorchScript extra file cnnlab.json, safetensors metadata "cnnlab") and in a
sidecar OUT.json. Every export is reloaded and checked against the run's own (unfused) model on a real
batch of the run's data; ONNX in onnxruntime. Above 1e-4 maximum absolute difference nothing is written."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import CnnlabError, CnnlabWarning, ConfigError
from ..runs import Run, check_writable
from ..utils.io import atomic_path, save_safetensors_atomic, write_json_atomic

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")
EXPORT_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts", ".torchscript"),
                   "safetensors": (".safetensors",)}
PARITY_TOLERANCE = 1e-4
METADATA_KEY = "cnnlab"
SCHEMA_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ParityError(CnnlabError):
    """An exported model's outputs differ from the run's model by more than the tolerance."""

    exit_code = 1


@dataclass
class ExportResult:
    path: Path
    format: str
    sidecar: Path
    max_abs_diff: float
    parity_images: int
    metadata: dict
    folded: int = 0                 # BatchNorms folded
    layers_before: int = 0
    layers_after: int = 0
    notes: list[str] = field(default_factory=list)


def export_metadata(run: Run, weights: str, fused: bool, channels_last: bool, fmt: str) -> dict:
    """What travels with an export: classes, preprocessing, the input/output contract and the build."""
    pre = run.preprocess
    return {"schema_version": SCHEMA_VERSION, "format": fmt, "model": run.config.model, "run": str(run.path),
            "weights": weights, "classes": list(run.classes), "preprocess": pre.to_dict(),
            "input": {"name": INPUT_NAME, "shape": ["batch", pre.channels, *pre.image_size], "dtype": "float32",
                      "layout": "NCHW, normalised: (pixel/255 - mean) / std"},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", run.num_classes], "meaning": "logits"},
            "fused_bn": fused, "channels_last": channels_last, "build_kwargs": run.build_kwargs()}


def check_export_args(fmt: str, out: str | Path) -> Path:
    """Format and output path checked before any work (one-line ConfigError)."""
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a directory; give a file name")
    # The suffix says what a file is: `cnnlab predict` runs a .onnx file in onnxruntime and any other as
    # something else, so an ONNX graph named .pt (or TorchScript named .onnx) would be misread later.
    if out.suffix.lower() not in EXPORT_SUFFIXES[fmt]:
        raise ConfigError(f"--out {out}: an export to {fmt} must end in {' or '.join(EXPORT_SUFFIXES[fmt])}")
    check_writable(out.parent if str(out.parent) else Path("."), "--out")
    return out


def _note(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, CnnlabWarning, stacklevel=3)


def export_run(run: Run | str | Path, fmt: str, out: str | Path, *, weights: str = "final", fuse_bn: bool = False,
               channels_last: bool = False, parity_images: int = 32, opset: int | None = None) -> ExportResult:
    """Export `run`'s `weights` as `fmt` (onnx | torchscript | safetensors) to `out`, check it against the
    run's own model on `parity_images` real test images, and write the sidecar `out`.json. Raises
    ParityError (nothing written) when the reloaded export differs by more than 1e-4."""
    from .fuse import fold_batchnorm

    run = run if isinstance(run, Run) else Run.open(run)
    out = check_export_args(fmt, out)
    run.resolve_weights(weights)
    if parity_images < 1:
        raise ConfigError(f"parity_images must be positive, got {parity_images}")
    reference = run.model(weights)

    def rebuild() -> nn.Module:  # a fresh model of the exported structure, for the safetensors round trip
        fresh = run.model(None)
        return fold_batchnorm(fresh, inplace=True).model if fuse_bn else fresh

    meta = export_metadata(run, weights, fuse_bn, channels_last and fmt == "torchscript", fmt)
    return export_model(reference, fmt, out, batch=_real_batch(run, parity_images), metadata=meta,
                        fuse_bn=fuse_bn, channels_last=channels_last, rebuild=rebuild, opset=opset,
                        source=str(run.path))


def export_model(model: nn.Module, fmt: str, out: str | Path, *, batch: torch.Tensor, metadata: dict,
                 fuse_bn: bool = False, channels_last: bool = False, rebuild=None, opset: int | None = None,
                 source: str = "the model") -> ExportResult:
    """Export `model` (eval mode; BN folded first with `fuse_bn`) as `fmt` to `out` with `metadata`, then
    load the file back and compare its outputs on `batch` (normalised real images) with `model`'s own
    (unfused) outputs. `rebuild()` makes a fresh model of the exported structure for the safetensors round
    trip (default: a copy of it)."""
    import copy

    from .fuse import fold_batchnorm

    out = check_export_args(fmt, out)
    notes: list[str] = []
    reference = model.eval()
    result = None
    if fuse_bn:
        result = fold_batchnorm(reference)
        model = result.model
        for note in result.notes:
            _note(notes, note)
    if channels_last and fmt != "torchscript":
        _note(notes, f"--channels-last has no effect on a {fmt} export ("
                     + ("onnxruntime chooses its own layouts)" if fmt == "onnx" else "weights are stored contiguous)"))
        channels_last = False
    with torch.no_grad():
        expected = reference(batch).float()
    if not torch.isfinite(expected).all():
        raise ConfigError(f"{source}: the model gives non-finite outputs on real test images (did training "
                          f"diverge?); there is nothing sound to export")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rebuild is None:
        exported = model

        def rebuild() -> nn.Module:
            return copy.deepcopy(exported)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            got = _export_onnx(model, batch, tmp, metadata, opset)
        elif fmt == "torchscript":
            got = _export_torchscript(model, batch, tmp, metadata, channels_last)
        else:
            got = _export_safetensors(model, rebuild, batch, tmp, metadata)
        diff = float((torch.as_tensor(got) - expected).abs().max())
        if not diff <= PARITY_TOLERANCE:  # also catches NaN
            scale = float(expected.abs().max())
            hint = (f"; the model's outputs reach {scale:.3g}, where float32 rounding alone exceeds the tolerance"
                    if scale * 2 ** -23 * 8 > PARITY_TOLERANCE else "")
            raise ParityError(f"{out}: the {fmt} export's outputs differ from the model's by {diff:.3g} "
                              f"(max abs over {len(batch)} test images; tolerance {PARITY_TOLERANCE:g}){hint}; "
                              f"nothing was written")
    sidecar = out.with_name(out.name + ".json")
    write_json_atomic(sidecar, {**metadata, "parity": {"max_abs_diff": diff, "images": len(batch),
                                                       "checked_with": "onnxruntime" if fmt == "onnx" else "torch"}})
    return ExportResult(out, fmt, sidecar, diff, len(batch), metadata, len(result.folded) if result else 0,
                        result.layers_before if result else 0, result.layers_after if result else 0, notes)


def _real_batch(run: Run, n: int) -> torch.Tensor:
    """The first `n` images of the run's test split (val, then train, if it is smaller), normalised."""
    dataset = run.dataset()
    for split in ("test", "val", "train"):
        if len(getattr(dataset, split)):
            x, _ = next(iter(run.loader(split, dataset=dataset, batch_size=n)))
            return x
    raise ConfigError(f"{run.path}: the run's data has no images to check the export on")


@contextlib.contextmanager
def _quiet_exporter():
    """torch.onnx prints progress lines and logs torchvision-missing warnings; the library prints nothing."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _export_onnx(model: nn.Module, batch: torch.Tensor, tmp: Path, meta: dict, opset: int | None):
    """torch.onnx (the torch.export-based exporter) with a dynamic batch axis, the metadata added, then the
    file run in onnxruntime on the whole batch (a different batch size from the traced example)."""
    import onnx
    import onnxruntime as ort

    example = batch[:2] if len(batch) >= 2 else batch.expand(2, *batch.shape[1:])
    kwargs = {"opset_version": opset} if opset else {}
    try:
        with _quiet_exporter():
            torch.onnx.export(model, (example,), str(tmp), dynamo=True, external_data=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), **kwargs)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; one line for the user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CnnlabError(f"ONNX export failed ({type(exc).__name__}: {first})") from None
    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(proto, str(tmp))
    session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: batch.numpy()})[0]


def _export_torchscript(model: nn.Module, batch: torch.Tensor, tmp: Path, meta: dict, channels_last: bool):
    """torch.jit.trace (deprecated upstream in favour of torch.export, still what C++/mobile runtimes load),
    saved with cnnlab.json as an extra file, then loaded back and run on the whole batch."""
    example = batch[:2]
    if channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the check is ours (below, on the whole batch, against the unfused model)
            traced = torch.jit.trace(model, example, check_trace=False)
        except Exception as exc:  # noqa: BLE001 - tracing raises many types; one line for the user
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise CnnlabError(f"TorchScript export failed ({type(exc).__name__}: {first})") from None
        torch.jit.save(traced, str(tmp), _extra_files={"cnnlab.json": json.dumps(meta)})
        loaded = torch.jit.load(str(tmp), map_location="cpu")
    x = batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
    with torch.no_grad():
        return loaded(x).float()


def _export_safetensors(model: nn.Module, rebuild, batch: torch.Tensor, tmp: Path, meta: dict):
    """The (folded) state dict with the metadata, loaded back into a freshly built model of the same
    structure and run on the batch."""
    from ..train.checkpoint import load_weights

    save_safetensors_atomic(model.state_dict(), tmp, metadata={METADATA_KEY: json.dumps(meta)})
    fresh = rebuild()
    fresh.load_state_dict(load_weights(tmp))
    with torch.no_grad():
        return fresh.eval()(batch).float()
