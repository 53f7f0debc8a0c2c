"""Sweep figures: best-so-far against trial number, one line per study (so two studies over one space, one
grid and one random, answer "grid or random?"), and Optuna's own plots of one study — parameter importances,
parallel coordinates, the per-epoch validation curves the pruner judged — via optuna.visualization.matplotlib
(matplotlib only; Optuna's default plotly backend is not needed)."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna

from ..errors import ConfigError
from ..utils.io import atomic_path


def study_names(storage) -> list[str]:
    return optuna.study.get_all_study_names(storage=storage)


def best_so_far(study: optuna.Study) -> tuple[list[int], list[float | None]]:
    """(finished trial count, best validation accuracy so far) over the finished trials in trial-number order;
    pruned and failed trials count as trials and leave the best where it was."""
    S = optuna.trial.TrialState
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (S.COMPLETE, S.PRUNED) or (t.state == S.FAIL and "cnnlab_error" in t.user_attrs)]
    xs, ys, best = [], [], None
    for k, t in enumerate(sorted(done, key=lambda t: t.number), start=1):
        if t.state == S.COMPLETE and (best is None or t.value > best):
            best = t.value
        xs.append(k)
        ys.append(best)
    return xs, ys


def sampler_of(study: optuna.Study) -> str:
    return (study.user_attrs.get("cnnlab_sweep") or {}).get("sampler", "?")


def plot_best_so_far(storage, studies: list[str] | None, out: str | Path) -> tuple[Path, list[dict]]:
    """One PNG, one line per study; returns it and a summary row per study."""
    from .plots import new_figure, save

    names = studies or study_names(storage)
    known = set(study_names(storage))
    missing = [n for n in names if n not in known]
    if missing or not names:
        raise ConfigError(f"no study {missing[0]!r} in the storage; studies: {', '.join(sorted(known)) or 'none'}"
                          if missing else "the storage holds no study yet (run `cnnlab sweep --config FILE`)")
    fig, (ax,) = new_figure(size=(7, 4.2))
    summary = []
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]  # lines that coincide stay distinguishable
    for k, name in enumerate(names):
        study = optuna.load_study(study_name=name, storage=storage)
        xs, ys = best_so_far(study)
        sampler = sampler_of(study)
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ls, marker = styles[k % len(styles)]
            ax.step([p[0] for p in pts], [100 * p[1] for p in pts], where="post", ls=ls, marker=marker, ms=5,
                    lw=1.8, alpha=0.85, label=f"{name} ({sampler})")
        summary.append({"study": name, "sampler": sampler, "finished": len(xs),
                        "best_val_accuracy": pts[-1][1] if pts else None})
    ax.set_xlabel("trials finished (in trial-number order)")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("sweeps: best so far")
    out = Path(out)
    with atomic_path(out) as tmp:
        save(fig, tmp)
    return out, summary


def optuna_plots(study: optuna.Study, out_dir: str | Path) -> list[Path]:
    """Optuna's importances (≥ 2 searched options, ≥ 3 complete trials), parallel coordinates (≥ 2 options)
    and intermediate values (the per-epoch curves the pruner judged), where the study has enough for them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out_dir = Path(out_dir)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    n_params = len({k for t in complete for k in t.params})
    wanted = []
    if n_params >= 2 and len(complete) >= 3:
        wanted += [("importances.png", ovm.plot_param_importances), ("parallel.png", ovm.plot_parallel_coordinate)]
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        wanted.append(("intermediate.png", ovm.plot_intermediate_values))
    written = []
    for name, fn in wanted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
            try:
                ax = fn(study)
            except (ValueError, RuntimeError):  # e.g. importances with one distinct value per parameter
                continue
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        path = out_dir / name
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        written.append(path)
    return written
