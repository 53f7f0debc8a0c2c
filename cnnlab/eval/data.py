"""The images an evaluation scores: a split of the run's own data, read exactly as in training, or other
data (`--data`) read with the run's preprocessing and matched to the run's classes by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.dataset import Split
from ..errors import ConfigError, DataError
from ..runs import Run

SPLITS = ("train", "val", "test", "all")


@dataclass
class EvalData:
    """Images (uint8) with labels as the run's class indices, and where they came from."""

    split: Split
    index: torch.Tensor        # position of each image in the split as the data source orders it
    source: str                # e.g. "digits, test split"
    split_name: str
    notes: list[str] = field(default_factory=list)


def check_split(split: str | None) -> str | None:
    if split is not None and split not in SPLITS:
        raise ConfigError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    return split


def _cat(splits: list[Split]) -> Split:
    return Split(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))


def _pick(dataset, split: str) -> Split:
    if split == "all":
        return _cat([dataset.train, dataset.val, dataset.test])
    return getattr(dataset, split)


def has_own_test_split(data: str) -> bool:
    """Whether DATA brings a test split of its own (named sources, a folder with test/, an .npz with
    x_test); otherwise every image of it is evaluation data."""
    from ..data.sources import SOURCES

    if data in SOURCES:
        return True
    path = Path(data).expanduser()
    if path.is_dir():
        return (path / "test").is_dir()
    if path.suffix == ".npz" and path.is_file():
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as z:
                return "x_test" in z.files
        except Exception as exc:  # numpy raises several types for a damaged archive
            raise DataError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc})") from None
    return True  # anything else: load_dataset names the problem


def is_own_data(run: Run, data: str | None) -> bool:
    """Whether `data` names the data the run was trained on (the same name, or the same path written
    differently): then its splits are reproduced exactly, so the test split holds no training image."""
    if data is None or data == run.config.data:
        return True
    a, b = Path(data).expanduser(), Path(run.config.data).expanduser()
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def load_eval_data(run: Run, data: str | None = None, split: str | None = None, dataset=None) -> EvalData:
    """The evaluation images: `split` (default test) of the run's data, or of `data` when given.

    Other data is decoded at the run's input size, channels and resize policy, padded as in training,
    and its classes are matched to the run's by name: images of classes the run does not know are
    skipped, and the run's classes without images are named in the notes. Data without a test split of
    its own (a flat image folder, an .npz without x_test) is evaluated whole (split "all"). `dataset`: the
    run's own dataset already loaded (run.dataset()), used instead of reading it again for the run's data."""
    check_split(split)
    own = is_own_data(run, data)
    if own:
        dataset = run.dataset() if dataset is None else dataset
        split = split or "test"
        chosen = _pick(dataset, split)
        label = f"{run.config.data}, {split} split" if split != "all" else f"{run.config.data}, all splits"
        return EvalData(chosen, torch.arange(len(chosen)), label, split)
    return _foreign(run, data, split)


def _foreign(run: Run, data: str, split: str | None) -> EvalData:
    from ..data import load_dataset

    notes: list[str] = []
    own_test = has_own_test_split(data)
    if split is None:
        split = "test" if own_test else "all"
    pre, cfg = run.preprocess, run.config
    size = (pre.image_size[0] - 2 * pre.pad, pre.image_size[1] - 2 * pre.pad)
    fractions = (0.6, 0.2, 0.2) if own_test else (1.0, 0.0, 0.0)
    dataset = load_dataset(data, image_size=size, channels=pre.channels, resize=pre.resize, seed=cfg.seed,
                           offline=cfg.offline, fractions=fractions)
    if own_test:
        chosen = _pick(dataset, split)
    else:
        chosen = dataset.train  # everything, in the source's order
        notes.append(f"{data} has no test split of its own: all {len(chosen)} of its images are evaluated")
        split = "all"
    if pre.pad:
        chosen = Split(torch.nn.functional.pad(chosen.images, (pre.pad,) * 4), chosen.labels)

    run_index = {c: i for i, c in enumerate(run.classes)}
    mapping = torch.tensor([run_index.get(c, -1) for c in dataset.classes], dtype=torch.long)
    if not (mapping >= 0).any():
        raise DataError(f"--data {data}: none of its classes {_names(dataset.classes)} is one of the run's "
                        f"{_names(run.classes)} (classes are matched by name)")
    labels = mapping[chosen.labels] if len(chosen) else chosen.labels
    keep = torch.nonzero(labels >= 0).flatten()
    unknown = [c for c in dataset.classes if c not in run_index]
    if unknown:
        counts = torch.bincount(chosen.labels, minlength=len(dataset.classes))
        skipped = ", ".join(f"{c} ({int(counts[dataset.classes.index(c)])})" for c in unknown)
        notes.append(f"{data}: {len(chosen) - len(keep)} images of classes the run does not know were skipped: "
                     f"{skipped}")
    present = torch.bincount(labels[keep], minlength=len(run.classes)) if len(keep) else \
        torch.zeros(len(run.classes), dtype=torch.long)
    missing = [c for c, n in zip(run.classes, present.tolist()) if n == 0]
    if missing:
        notes.append(f"{data}: no images of {len(missing)} of the run's {len(run.classes)} classes: "
                     f"{', '.join(missing)} (their rows are empty; predictions of them still count as errors)")
    evaluated = Split(chosen.images.index_select(0, keep), labels.index_select(0, keep))
    source = f"{data}, {split} split" if split != "all" else f"{data}, all images"
    return EvalData(evaluated, keep, source, split, notes)


def _names(names: list[str]) -> str:
    return "[" + ", ".join(names[:8]) + (f", … {len(names)} in all]" if len(names) > 8 else "]")
