"""Safe, exact checkpoints.

A checkpoint is a pair in RUN/checkpoints/: `ckpt-<step>.safetensors` (model weights, plus the EMA weights
prefixed "ema.") and `ckpt-<step>.state.pt` (optimizer, schedule, EMA counter, epoch/step position, every
RNG state, partial-epoch metric sums) holding only tensors, ints, floats, strings, lists and dicts so that it
loads with torch.load(weights_only=True) — nothing is ever unpickled. Both files are written atomically
(temp + rename); then `latest.json` is atomically switched to name them; then older pairs are deleted. A kill
at any moment therefore leaves `latest.json` naming a complete pair: the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..utils.io import save_safetensors_atomic, save_torch_atomic, write_json_atomic

CKPT_DIR = "checkpoints"
LATEST = "latest.json"
FORMAT = 1


# --- RNG states as tensors -------------------------------------------------------------------------------

def rng_state() -> dict:
    """Every RNG a training step may touch (torch CPU, CUDA, Python, NumPy) as tensors and numbers."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64), "python_version": int(py_version),
        "python_gauss": float("nan") if py_gauss is None else float(py_gauss),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)), "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss), "numpy_gauss": float(np_gauss), "numpy_name": str(np_name),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    gauss = state["python_gauss"]
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"].tolist()),
                     None if math.isnan(gauss) else gauss))
    np.random.set_state((state["numpy_name"], state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- checkpoint files --------------------------------------------------------------------------------------

def save_checkpoint(run_dir: str | Path, weights: dict[str, torch.Tensor], state: dict, global_step: int) -> Path:
    """Write one checkpoint pair atomically, point latest.json at it, prune older pairs."""
    ckdir = Path(run_dir) / CKPT_DIR
    ckdir.mkdir(parents=True, exist_ok=True)
    stem = f"ckpt-{global_step:09d}"
    pair = (ckdir / f"{stem}.safetensors", ckdir / f"{stem}.state.pt")
    try:
        save_safetensors_atomic(weights, pair[0], metadata={"global_step": str(global_step)})
        save_torch_atomic({"format": FORMAT, **state}, pair[1])
        write_json_atomic(ckdir / LATEST, {"weights": pair[0].name, "state": pair[1].name,
                                           "global_step": global_step, "epoch": int(state.get("epoch", 0)),
                                           "step": int(state.get("step", 0))})
    except OSError:
        # latest.json still names the previous pair: drop the half of this one that made it to disk (it
        # would only hold space a resume needs) unless it is the pair the pointer names (same step again).
        named = (latest_info(run_dir) or {}).get("weights")
        for path in pair:
            if named != pair[0].name:
                path.unlink(missing_ok=True)
        raise
    for old in ckdir.glob("ckpt-*"):
        if not old.name.startswith(stem + "."):
            old.unlink(missing_ok=True)
    return ckdir / f"{stem}.safetensors"


def latest_info(run_dir: str | Path) -> dict | None:
    """The latest.json record of a run (None if it has no checkpoint yet); a corrupt one, or one naming files
    outside checkpoints/, is a one-line ConfigError naming it."""
    path = Path(run_dir) / CKPT_DIR / LATEST
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        names = [info["weights"], info["state"]]
        int(info["epoch"]), int(info["step"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: corrupt checkpoint pointer (not the JSON record cnnlab writes); "
                          f"the run cannot be resumed from it") from None
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or not name.startswith("ckpt-"):
            raise ConfigError(f"{path}: names {name!r}, which is not a checkpoint file of this run; refused")
    return info


def load_checkpoint(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """(weights, state) of the run's last good checkpoint; ConfigError (one line, naming the file) if it has
    none or a file is missing or damaged."""
    info = latest_info(run_dir)
    if info is None:
        raise ConfigError(f"{run_dir}: no checkpoint to resume from (checkpoints/latest.json missing)")
    ckdir = Path(run_dir) / CKPT_DIR
    weights = load_weights(confined(ckdir / info["weights"], run_dir), device)
    state_path = confined(ckdir / info["state"], run_dir)
    if not state_path.is_file():
        raise ConfigError(f"{state_path}: missing (named by checkpoints/latest.json); the run cannot be resumed")
    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle opcode, refused global: all mean a damaged file
        raise ConfigError(f"{state_path}: unreadable training state ({type(exc).__name__}); the file is damaged "
                          f"or was not written by cnnlab") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ConfigError(f"{state_path}: checkpoint format {getattr(state, 'get', dict().get)('format')!r} "
                          f"is not supported")
    state["rng"]["torch"] = state["rng"]["torch"].cpu()  # RNG states must live on the CPU
    return weights, state


def confined(path: Path, run_dir: str | Path) -> Path:
    """`path` itself when it is a file of the run directory: not a link, and inside the run once every link
    on the way is resolved (a checkpoints/ folder linked elsewhere counts as outside). Resuming loads only
    what the run itself wrote."""
    if path.is_symlink():
        raise ConfigError(f"{path}: is a link (to {os.readlink(path)}), not a checkpoint file this run wrote; "
                          f"refused")
    root = Path(run_dir).resolve()
    if not path.resolve().is_relative_to(root):
        raise ConfigError(f"{path}: resolves to {path.resolve()}, outside the run directory {root}; refused")
    return path


def load_into(module: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load `weights` (read from `path`) into `module` after checking, with one line naming the file: the
    same names, shapes and dtypes as the module's own (weights of another model, or of another precision,
    are refused rather than cast), and finite values (NaN or inf weights are a damaged file: cnnlab never
    saves a diverged state)."""
    check_fits(module, weights, path)
    module.load_state_dict(weights)


def check_fits(module: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | Path) -> None:
    """The checks of `load_into`, without loading."""
    own = module.state_dict()
    missing, extra = [k for k in own if k not in weights], [k for k in weights if k not in own]
    if missing or extra:
        parts = [f"{len(missing)} of the model's tensors missing (e.g. {missing[0]!r})" if missing else "",
                 f"{len(extra)} it does not have (e.g. {extra[0]!r})" if extra else ""]
        raise ConfigError(f"{path}: weights of another model: {'; '.join(p for p in parts if p)}")
    for name, value in weights.items():
        ref = own[name]
        if tuple(value.shape) != tuple(ref.shape):
            raise ConfigError(f"{path}: weights of another model: {name} is {tuple(value.shape)}, the model's "
                              f"{tuple(ref.shape)}")
        if value.dtype != ref.dtype:
            raise ConfigError(f"{path}: {name} is {str(value.dtype).removeprefix('torch.')}, the model's "
                              f"{str(ref.dtype).removeprefix('torch.')}; refused rather than converted")
    floats = [v for v in weights.values() if v.is_floating_point() and v.numel()]
    if floats and not bool(torch.stack([v.isfinite().all() for v in floats]).all()):
        bad = next(k for k, v in weights.items() if v.is_floating_point() and not bool(v.isfinite().all()))
        raise ConfigError(f"{path}: {bad} holds NaN or infinite values; the file is damaged")


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A safetensors file as a name → tensor dict (no pickle involved); one-line ConfigError if it is missing
    or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such weights file")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0][:120]})") from None


def split_prefixed(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
