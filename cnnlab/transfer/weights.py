"""Starting a model from trained weights (`--init`): where the file comes from, reading it without running
any pickled code, and mapping its tensors onto the model.

Sources: a run directory (its final weights; resolved by the caller through cnnlab.runs), a .safetensors or
PyTorch (.pt/.pth) file, an http(s) URL (downloaded once into the cache, verified against --init-sha256 when
given), or published weights (`imagenet`, `torchvision:NAME`; see catalogue.py) — downloaded once, checked
against torchvision's SHA-256 prefix, then read like any other file.

Reading: safetensors, or `torch.load(weights_only=True)`, which refuses any pickle that would import or call
something other than tensors and plain containers; such a file is refused with the name of what it wanted
to run. There is deliberately no switch to unpickle it anyway.

Mapping (`load_into`): `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes stripped; a
checkpoint dict holding the weights under "state_dict"/"model"/... unwrapped; the head's final layer dropped
when its class count differs (or the caller says the classes differ) so it keeps the freshly built model's
own initialisation; a first conv trained on RGB adapted to grey input (kernels summed over RGB) and back;
every other key that is missing, unexpected or of another shape is reported, never silently ignored.

This module is imported by cnnlab.train: it imports nothing above it, and torch only inside functions (its
spec checks run when a config is validated, which must not import torch).
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import ConfigError, DataError
from . import catalogue

if TYPE_CHECKING:
    import torch
    from torch import nn

NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
WRAPPER_PREFIX = re.compile(r"^((module|_orig_mod)\.)+")


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def check_init_spec(spec: str, model: str, sha256: str | None) -> None:
    """Parse-time checks of --init / --init-sha256 (no file is read: a saved run's config stays valid if the
    file later moves). Published weights must exist for `model` and fit it."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("--init must name a run directory, a weights file, a URL or imagenet")
    if catalogue.is_catalogue_spec(spec):
        catalogue.lookup(spec, model)
        if sha256:
            raise ConfigError(f"--init-sha256: --init {spec} is checked against torchvision's own SHA-256 prefix")
    elif "://" in spec and not is_url(spec):
        raise ConfigError(f"--init {spec}: only http:// and https:// URLs are supported")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise ConfigError(f"--init-sha256 {sha256!r}: expected the file's SHA-256 in hex (at least 8 digits)")


@dataclass
class InitWeights:
    """A weights file read for --init: its tensors and what is known of how they were trained."""

    spec: str
    path: Path
    state: dict
    classes: list[str] | None = None          # the source run's class names (run directories only)
    mean: tuple[float, ...] | None = None     # the normalisation the weights were trained with
    std: tuple[float, ...] | None = None
    published: catalogue.PublishedWeights | None = None


def read_init(spec: str, model: str, *, sha256: str | None = None, offline: bool = False,
              open_run: Callable[[Path], tuple[Path, list[str], tuple, tuple]] | None = None) -> InitWeights:
    """Resolve --init `spec` to a local file (downloading it if needed) and read its tensors.

    `open_run(dir)` → (weights file, classes, mean, std) resolves a run directory (the runs module owns run
    files; this module may not import it)."""
    published = None
    classes = mean = std = None
    if catalogue.is_catalogue_spec(spec):
        published = catalogue.lookup(spec, model)
        path = fetch(published.url, catalogue_cache() / published.file, published.sha256_prefix, offline, spec)
        mean, std = published.preprocessing.mean, published.preprocessing.std
    elif is_url(spec):
        path = fetch(spec, url_cache_path(spec), sha256, offline, spec)
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            if open_run is None:
                raise ConfigError(f"--init {spec}: is a directory (a run directory is read by cnnlab train)")
            path, classes, mean, std = open_run(path)
        elif not path.is_file():
            raise ConfigError(f"--init {spec}: no such file or run directory")
        elif sha256 and not _digest_matches(path, sha256):
            raise ConfigError(f"--init {spec}: SHA-256 does not start with {sha256.lower()} (--init-sha256)")
    return InitWeights(spec, path, read_state_dict(path), classes, mean, std, published)


# --- fetching -----------------------------------------------------------------------------------------------

def catalogue_cache() -> Path:
    from ..data.download import cache_home

    return cache_home() / "weights"


def url_cache_path(url: str) -> Path:
    """Where a URL's file is cached: weights/url-<hash of the URL>/<its file name>, so two URLs ending in
    the same name never share a cache entry."""
    name = Path(urllib.parse.urlparse(url).path).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "weights.bin"
    return catalogue_cache() / f"url-{hashlib.sha256(url.encode()).hexdigest()[:12]}" / name


def fetch(url: str, target: Path, sha256: str | None, offline: bool, spec: str) -> Path:
    """`target`, downloaded from `url` first if it is not cached. A full SHA-256 is checked by the download
    itself before the file is renamed into place; a prefix (torchvision's file names carry one) is checked on
    a staging name, so the cache only ever holds verified files. A cached file with a user-given hash is
    checked again on every use."""
    from ..data.download import download

    if target.is_file():
        if not sha256 or _digest_matches(target, sha256):
            return target
        if offline:
            raise DataError(f"--init {spec}: cached {target} does not match SHA-256 {sha256} and --offline forbids "
                            f"downloading it again")
        target.unlink()
    full = sha256 if sha256 and len(sha256) == 64 else None
    staging = target.name + ".unverified" if sha256 and not full else target.name
    try:
        path = download(staging, [url], target.parent, full, offline=offline)
    except DataError as exc:
        raise DataError(f"--init {spec}: {exc}") from None
    if staging != target.name:
        if not _digest_matches(path, sha256):
            got = _sha256(path)
            path.unlink(missing_ok=True)
            raise DataError(f"--init {spec}: the file from {url} has SHA-256 {got[:16]}…, expected it to start with "
                            f"{sha256.lower()}; nothing was kept")
        path = path.replace(target)
    return path


def _sha256(path: Path) -> str:
    from ..data.download import file_digest

    return file_digest(path, "sha256")


def _digest_matches(path: Path, expected: str) -> bool:
    return _sha256(path).startswith(expected.lower())


# --- reading ------------------------------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict:
    """name → tensor from a safetensors or PyTorch file, without running any pickled code; a training
    checkpoint's nested weights are unwrapped and `module.` / `_orig_mod.` prefixes stripped."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if _is_safetensors(path):
        from ..train.checkpoint import load_weights

        state = load_weights(path)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on pickle protocols; the outcome is what counts
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ConfigError(f"{path}: refused: loading it would run pickled code ({_refusal(str(exc))}); cnnlab "
                              f"only reads tensors (safetensors, or torch.load with weights_only=True) — re-save "
                              f"the weights as a plain state dict or safetensors where you trust the file") from None
        except Exception as exc:  # truncated zip, not a torch file at all, EOF: all mean it is not readable
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:100]
            raise ConfigError(f"{path}: not a readable weights file (.safetensors or a PyTorch state dict): "
                              f"{first}") from None
    tensors = _unwrap(state)
    if not tensors:
        raise ConfigError(f"{path}: holds no tensors (expected a state dict: parameter name → tensor)")
    return {WRAPPER_PREFIX.sub("", k): v for k, v in tensors.items()}


def _is_safetensors(path: Path) -> bool:
    """safetensors files start with an 8-byte little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 31)


def _refusal(message: str) -> str:
    """What torch's weights-only unpickler refused, in a few words."""
    m = re.search(r"GLOBAL ([\w.]+)", message)
    if m:
        return f"it imports {m.group(1)}"
    m = re.search(r"Unsupported operand (\d+)", message)
    if m:
        return f"pickle opcode {m.group(1)} is not allowed"
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    return lines[-2][:100] if len(lines) >= 2 else "not a plain state dict"


def _unwrap(obj) -> dict:
    """The tensors of a state dict, or of the first nested dict under a usual checkpoint key."""
    import torch

    if not isinstance(obj, dict):
        return {}
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if tensors:
        return tensors
    for key in NESTED_KEYS:
        if isinstance(obj.get(key), dict):
            inner = _unwrap(obj[key])
            if inner:
                return inner
    return {}


# --- mapping onto a model ----------------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What `load_into` did with each tensor of the file and each of the model."""

    source: str
    total: int
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)          # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)       # in the file, not in the model
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, file shape, model shape)
    head_reset: list[str] = field(default_factory=list)       # head keys dropped: fresh initialisation kept
    head_reason: str = ""
    adapted: list[str] = field(default_factory=list)

    def summary(self, limit: int = 20) -> dict:
        """For result.json: counts and (up to `limit`) names."""
        return {"source": self.source, "tensors_in_file": self.total, "loaded": len(self.loaded),
                "missing": self.missing[:limit], "missing_count": len(self.missing),
                "unexpected": self.unexpected[:limit], "unexpected_count": len(self.unexpected),
                "mismatched": [{"key": k, "file_shape": list(a), "model_shape": list(b)}
                               for k, a, b in self.mismatched[:limit]],
                "mismatched_count": len(self.mismatched), "head_reset": self.head_reset,
                "head_reason": self.head_reason, "adapted": self.adapted}

    def message(self) -> str:
        """The one-line note the CLI prints."""
        parts = [f"--init {self.source}: loaded {len(self.loaded)} of {self.total} tensors"]
        if self.head_reset:
            parts.append(f"head {_names(self.head_reset, 4)} re-initialised ({self.head_reason})")
        if self.adapted:
            parts.append("; ".join(self.adapted))
        if self.missing:
            parts.append(f"{len(self.missing)} missing, kept as initialised ({_names(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected, ignored ({_names(self.unexpected)})")
        if self.mismatched:
            shapes = ", ".join(f"{k} {_shape(a)} in the file vs {_shape(b)}" for k, a, b in self.mismatched[:3])
            more = f", … {len(self.mismatched)} in all" if len(self.mismatched) > 3 else ""
            parts.append(f"{len(self.mismatched)} of another shape, kept as initialised ({shapes}{more})")
        return "; ".join(parts)


def _names(keys: list[str], limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (f", … {len(keys)} in all" if len(keys) > limit else "")


def _shape(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def head_keys(model: "nn.Module") -> set[str]:
    """State-dict keys of the layers that output class scores: the head stage's nn.Linear layers with
    `num_classes` outputs (the classifier; GoogLeNet's auxiliary fc2 too), else the model's last nn.Linear."""
    from torch import nn

    num_classes = getattr(model, "num_classes", None)
    paths: tuple[str, ...] = ()
    if hasattr(model, "stage_layout"):
        paths = dict(model.stage_layout()).get("head", ())
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [n for n, m in linears if m.out_features == num_classes
              and any(n == p or n.startswith(p + ".") for p in paths)]
    if not chosen and linears:
        chosen = [linears[-1][0]]
    return {f"{n}.{p}" for n in chosen for p in ("weight", "bias") if f"{n}.{p}" in model.state_dict()}


def _first_conv_key(model: "nn.Module") -> str | None:
    from torch import nn

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight"
    return None


def _adapt_input_conv(weight: "torch.Tensor", channels: int) -> "torch.Tensor | None":
    """An RGB-trained first conv for grey input (kernels summed over RGB, as timm's adapt_input_conv),
    or a grey-trained one for RGB input (repeated, scaled by 1/3 so the response to grey RGB is unchanged)."""
    if weight.shape[1] == 3 and channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if weight.shape[1] == 1 and channels == 3:
        return weight.repeat(1, 3, 1, 1) / 3.0
    return None


def load_into(model: "nn.Module", state: dict, *, source: str, reset_head: str = "") -> LoadReport:
    """Copy every tensor of `state` that fits `model` into it and report the rest. `reset_head` (a reason,
    e.g. "the source run's classes differ") drops the head even when its shape fits. Tensors left out keep
    the model's own (fresh) initialisation. Raises ConfigError when nothing fits at all."""
    target = model.state_dict()
    heads = head_keys(model)
    first_conv = _first_conv_key(model)
    report = LoadReport(source, len(state))
    ready: dict = {}
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        want = target[key]
        if key in heads and (reset_head or value.shape != want.shape):
            report.head_reset.append(key)
            report.head_reason = reset_head or (f"{getattr(model, 'num_classes', '?')} classes here, "
                                                f"{value.shape[0]} in the file")
            continue
        if value.shape != want.shape and key == first_conv and value.ndim == 4 and \
                value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            adapted = _adapt_input_conv(value, want.shape[1])
            if adapted is not None:
                report.adapted.append(f"{key} adapted from {value.shape[1]} to {want.shape[1]} input channels")
                value = adapted
        if value.shape != want.shape:
            report.mismatched.append((key, tuple(value.shape), tuple(want.shape)))
            continue
        ready[key] = value.to(want.dtype)
        report.loaded.append(key)
    # BN's num_batches_tracked is a step counter, not a weight: older files lack it and nothing depends on it.
    report.missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")
                      and k not in report.head_reset]
    if not ready:
        example = next(iter(state), "?")
        raise ConfigError(f"--init {source}: none of its {len(state)} tensors fits this {type(model).__name__} "
                          f"(e.g. {example!r}: {'not in the model' if example not in target else 'another shape'})")
    model.load_state_dict(ready, strict=False)
    return report


def select_stages(state: dict, model: "nn.Module", stages: list[str]) -> dict:
    """The tensors of `state` that belong to the named stages of `model` (Yosinski et al.'s "copy the first
    n layers": the rest is left to the target model's own initialisation)."""
    layout = dict(model.stage_layout())
    paths = [p for s in stages for p in layout[s]]
    return {k: v for k, v in state.items() if any(k.startswith(p + ".") for p in paths)}
