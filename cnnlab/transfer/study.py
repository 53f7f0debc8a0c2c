"""The experiment of Yosinski et al. (2014), "How transferable are features in deep neural networks?", at
laptop scale: `transfer_study(...)` (CLI: `cnnlab transfer-study`).

Split a dataset's classes in half (A/B; a fresh random split per seed, or `classes_a`), or take two datasets.
Train base models on A and on B. For n = 1..L (L = the stages below the head), copy the first n stages of a
base model into a fresh one and train it on B:
    AnB   stages 1..n from the A model, frozen        (how specific to A are they?)
    AnB+  stages 1..n from the A model, fine-tuned    (does having seen A help?)
    BnB   stages 1..n from the B model, frozen        (control: fragile co-adaptation)
    BnB+  stages 1..n from the B model, fine-tuned    (control)
n = 0 is the base B model itself (nothing copied). Every run is an ordinary cnnlab run directory (the copied
stages are a weights file passed as --init, frozen with --freeze), so any point can be re-run or inspected;
finished runs with the same settings are reused when a study is run again. The result is the table of test
accuracy on B (mean ± std over seeds, std with ddof=1) and the paper's figure.

Study directory: data/ (the A/B .npz files), weights/ (copied stages), runs/seed-S/<condition>,
results.json, table.md, transfer-study.png.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CnnlabWarning, ConfigError

CONDITIONS = ("BnB", "BnB+", "AnB", "AnB+")
QUICK = {"epochs": 8, "seeds": 3}


@dataclass
class StudyResult:
    """`rows`: one per n with {"n", "copied", and per condition {"mean", "std", "values"}}; `runs`: every
    training run (seed, condition, n, test accuracy, run directory); `plot`: the figure's PNG."""

    rows: list[dict]
    runs: list[dict]
    plot: Path
    out: Path
    settings: dict = field(default_factory=dict)
    base: list[dict] = field(default_factory=list)

    def table(self) -> str:
        """The table as Markdown (what table.md holds)."""
        head = "| n | copied stages | " + " | ".join(CONDITIONS) + " |"
        lines = [head, "|---|---|" + "---|" * len(CONDITIONS)]
        for row in self.rows:
            cells = [_fmt(row[c]) for c in CONDITIONS]
            lines.append(f"| {row['n']} | {row['copied']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(cell: dict) -> str:
    return f"{cell['mean']:.4f} ± {cell['std']:.4f}"


def _split_sizes(k: int) -> int:
    """A training pool size n whose 75/25 train/val carve (what a .npz with its own test split gets, see
    cnnlab.data.sources) leaves exactly k training images per class."""
    from ..data.splits import stratified_split

    for n in range(k, 2 * k + 4):
        tr, _ = stratified_split(torch.zeros(n, dtype=torch.long), (0.75, 0.25), 0)
        if len(tr) == k:
            return n
    return math.ceil(k / 0.75)


def _subset(split, classes: list[int], limit: int | None, gen: torch.Generator):
    """(images, labels relabelled 0..len(classes)-1) of the split's images of `classes`, at most `limit` per
    class (chosen at random)."""
    xs, ys = [], []
    for new, c in enumerate(classes):
        idx = torch.nonzero(split.labels == c).flatten()
        if limit is not None:
            idx = idx[torch.randperm(len(idx), generator=gen)[:limit]]
        xs.append(split.images[idx])
        ys.append(torch.full((len(idx),), new, dtype=torch.long))
    return torch.cat(xs).numpy(), torch.cat(ys).numpy()


def _write_npz(path: Path, dataset, classes: list[int], per_class: int | None, seed: int) -> None:
    """A and B as .npz files: train+val as the training pool (cnnlab carves 25 % of it for validation) and the
    test split as x_test; with `per_class`, a pool that leaves exactly that many training images per class."""
    from ..utils.io import atomic_path

    gen = torch.Generator().manual_seed(seed)
    pool = _split_sizes(per_class) if per_class else None
    merged = type(dataset.train)(torch.cat([dataset.train.images, dataset.val.images]),
                                 torch.cat([dataset.train.labels, dataset.val.labels]))
    x, y = _subset(merged, classes, pool, gen)
    xt, yt = _subset(dataset.test, classes, None, gen)
    names = np.array([dataset.classes[c] for c in classes], dtype=str)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, x=x, y=y, x_test=xt, y_test=yt, classes=names)


def _datasets(data: str, data_b: str | None, classes_a, image_size, per_class, seed: int, root: Path):
    """(A .npz, B .npz, A class names, B class names) for one seed, written under root/data/."""
    from ..data import load_dataset

    ds = load_dataset(data, image_size=image_size, seed=seed)
    if data_b is None:
        k = ds.num_classes
        if k < 2:
            raise ConfigError(f"--data {data}: needs at least 2 classes to split into A and B")
        if classes_a:
            unknown = [c for c in classes_a if c not in ds.classes]
            if unknown:
                raise ConfigError(f"--classes-a: {unknown[0]!r} is not a class of {data} ({', '.join(ds.classes)})")
            a = [ds.classes.index(c) for c in classes_a]
        else:
            order = torch.randperm(k, generator=torch.Generator().manual_seed(seed)).tolist()
            a = sorted(order[:k // 2])
        b = [i for i in range(k) if i not in a]
        if not a or not b:
            raise ConfigError("--classes-a must leave classes for both A and B")
        ds_a, ds_b = ds, ds
    else:
        c, h, _ = ds.image_shape
        ds_b = load_dataset(data_b, image_size=h, channels=c, seed=seed)
        ds_a, a, b = ds, list(range(ds.num_classes)), list(range(ds_b.num_classes))
    tag = hashlib.sha256(json.dumps([data, data_b, a, b, image_size, per_class, seed]).encode()).hexdigest()[:10]
    folder = root / "data" / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    path_a, path_b = folder / f"A-{tag}.npz", folder / f"B-{tag}.npz"
    _write_npz(path_a, ds_a, a, None, seed)
    _write_npz(path_b, ds_b, b, per_class, seed)
    return path_a, path_b, [ds_a.classes[i] for i in a], [ds_b.classes[i] for i in b]


def _train(root: Path, name: str, wanted: dict, progress) -> dict:
    """One training run under root/runs (reused when a finished run with the same settings is there);
    returns {test_accuracy, run_dir, notes, reused}."""
    from ..runs import Run
    from ..train import train

    out = root / "runs" / name
    if (out / "result.json").is_file():
        try:
            run = Run.open(out)
            if run.finished and all(getattr(run.config, k) == v for k, v in wanted.items()):
                return {"test_accuracy": float(run.result["test_accuracy"]), "run_dir": str(out), "notes": [],
                        "reused": True}
        except ConfigError:
            pass
    if progress:
        progress(f"training {name}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        result = train(dict(wanted), out=str(out), overwrite=True, quiet=True)
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    return {"test_accuracy": float(result.test_accuracy), "run_dir": str(out), "notes": notes, "reused": False}


def _copied_stages(run_dir: str, stages: list[str], path: Path) -> Path:
    """The first stages of a base run's final weights, as a .safetensors file for --init."""
    from ..runs import Run
    from ..utils.io import save_safetensors_atomic
    from .weights import read_state_dict, select_stages

    run = Run.open(run_dir)
    model = run.model(None)
    state = select_stages(read_state_dict(run.resolve_weights("final")), model, stages)
    save_safetensors_atomic(state, path, metadata={"source": run_dir, "stages": ",".join(stages)})
    return path


def transfer_study(model: str = "lenet5", data: str = "digits", *, data_b: str | None = None,
                   classes_a: list[str] | None = None, seeds: int | None = None, epochs: int | None = None,
                   per_class: int | None = None, image_size: int | None = None, out: str | Path | None = None,
                   quick: bool = False, train_options: dict | None = None,
                   progress: Callable[[str], None] | None = None) -> StudyResult:
    """Run the A/B transfer experiment (see the module docstring) and return the table rows, every run and
    the plot. `quick`: 8 epochs, 3 seeds (unless given). `train_options`: further TrainConfig fields for
    every run (lr, batch_size, threads, …). `progress(line)` is called before each training run."""
    from ..train.config import TrainConfig

    seeds = seeds if seeds is not None else (QUICK["seeds"] if quick else 3)
    epochs = epochs if epochs is not None else (QUICK["epochs"] if quick else 20)
    if seeds < 1 or epochs < 1:
        raise ConfigError("--seeds and --epochs must be positive")
    if per_class is not None and per_class < 1:
        raise ConfigError(f"--per-class must be positive, got {per_class}")
    options = dict(train_options or {})
    clash = {"model", "data", "init", "freeze", "epochs", "seed", "out", "overwrite"} & set(options)
    if clash:
        raise ConfigError(f"transfer-study sets {', '.join(sorted(clash))} itself")
    TrainConfig.resolve({"model": model, "data": data, "epochs": epochs, **options}, {}, "transfer-study")
    root = Path(out) if out else Path("runs") / f"transfer-study-{Path(model).name}-{Path(data).stem}"
    from ..runs import check_writable

    check_writable(root)
    runs: list[dict] = []
    base: list[dict] = []
    stage_names: list[str] = []
    for seed in range(seeds):
        path_a, path_b, names_a, names_b = _datasets(data, data_b, classes_a, image_size, per_class, seed, root)
        common = {"model": model, "epochs": epochs, "seed": seed, **options}
        if progress:
            progress(f"seed {seed + 1}/{seeds}: A = {', '.join(names_a)}; B = {', '.join(names_b)}")
        base_a = _train(root, f"seed-{seed}/baseA", {**common, "data": str(path_a)}, progress)
        base_b = _train(root, f"seed-{seed}/baseB", {**common, "data": str(path_b)}, progress)
        base.append({"seed": seed, "A": base_a["test_accuracy"], "B": base_b["test_accuracy"],
                     "classes_a": names_a, "classes_b": names_b})
        from ..runs import Run

        stage_names = [s for s in Run.open(base_a["run_dir"]).model(None).stage_names if s != "head"]
        for cond in CONDITIONS:
            runs.append({"seed": seed, "condition": cond, "n": 0, **base_b})
        for n in range(1, len(stage_names) + 1):
            copied = stage_names[:n]
            for src, src_run in (("A", base_a), ("B", base_b)):
                weights = _copied_stages(src_run["run_dir"], copied,
                                         root / "weights" / f"seed-{seed}" / f"{src}-first{n}.safetensors")
                for frozen in (True, False):
                    cond = f"{src}nB" + ("" if frozen else "+")
                    wanted = {**common, "data": str(path_b), "init": str(weights),
                              "freeze": ",".join(copied) if frozen else None}
                    r = _train(root, f"seed-{seed}/{cond}-{n}", wanted, progress)
                    runs.append({"seed": seed, "condition": cond, "n": n, **r})
    rows = _rows(runs, stage_names)
    settings = {"model": model, "data": data, "data_b": data_b, "classes_a": classes_a, "seeds": seeds,
                "epochs": epochs, "per_class": per_class, "image_size": image_size, "train_options": options}
    result = StudyResult(rows, runs, root / "transfer-study.png", root, settings, base)
    plot_study(result, result.plot)
    from ..utils.io import write_json_atomic, write_text_atomic

    write_json_atomic(root / "results.json", {"schema_version": 1, "settings": settings, "base": base,
                                              "rows": rows, "runs": runs})
    write_text_atomic(root / "table.md", result.table() + "\n")
    return result


def _rows(runs: list[dict], stage_names: list[str]) -> list[dict]:
    rows = []
    for n in range(len(stage_names) + 1):
        row: dict = {"n": n, "copied": ",".join(stage_names[:n]) or "none (base B)"}
        for cond in CONDITIONS:
            values = [r["test_accuracy"] for r in runs if r["n"] == n and r["condition"] == cond]
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            row[cond] = {"mean": float(np.mean(values)), "std": std, "values": values}
        rows.append(row)
    return rows


STYLE = {"BnB": ("C0", "o", "-"), "BnB+": ("C9", "s", "--"), "AnB": ("C3", "D", "-"), "AnB+": ("C1", "^", "--")}


def plot_study(result: StudyResult, path: Path) -> Path:
    """Test accuracy on B against the number of copied stages n: each seed's run as a small marker, the mean
    with ± std error bars (Yosinski et al.'s Figure 2, at laptop scale). PNG via matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=100)
    ns = [row["n"] for row in result.rows]
    for i, cond in enumerate(CONDITIONS):
        color, marker, ls = STYLE[cond]
        dx = (i - 1.5) * 0.06  # side by side, so the markers of one n do not hide each other
        for row in result.rows:
            vals = row[cond]["values"]
            ax.scatter([row["n"] + dx] * len(vals), vals, color=color, marker=marker, s=14, alpha=0.35, lw=0)
        means = [row[cond]["mean"] for row in result.rows]
        stds = [row[cond]["std"] for row in result.rows]
        ax.errorbar([n + dx for n in ns], means, yerr=stds, color=color, marker=marker, ls=ls, capsize=3,
                    label=cond)
    ax.set_xticks(ns, [f"{row['n']}\n{row['copied'].split(',')[-1] if row['n'] else 'base B'}"
                       for row in result.rows])
    ax.set_xlabel("stages copied from the base model (n)")
    ax.set_ylabel("test accuracy on B")
    s = result.settings
    ax.set_title(f"{s['model']} on {s['data']}{' → ' + s['data_b'] if s['data_b'] else ' (A/B class halves)'}: "
                 f"mean ± std over {s['seeds']} seed(s)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(ncol=4, fontsize=9, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
