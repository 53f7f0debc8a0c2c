"""Accuracy of the lectures' small-data recipes on scikit-learn's digits (the README's transfer table):
pretrain on digits 0-4, then learn 5-9 from 20 training images per class, for several seeds —

    scratch             the same network trained from scratch on the 100 images
    fine-tune           --init the 0-4 run, every layer trained (same recipe as scratch)
    freeze all-but-head --init the 0-4 run, --freeze all-but-head (only the head is trained)
    probe logreg / svm  `cnnlab features` (pre-logits) + `cnnlab probe`: a linear classifier on fixed features

for LeNet-5 (32×32) and a small batch-normalised CNN (16×16; the network of tests/test_transfer_digits.py).
The 0-4 model is trained with rotate/translate/stretch augmentation for 20 epochs, every 5-9 run for 20.

Usage: .venv/bin/python benchmarks/bench_transfer_digits.py [--seeds 3] [--out DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnlab.train import train  # noqa: E402
from cnnlab.transfer.features import extract_features  # noqa: E402
from cnnlab.transfer.probe import fit_probe  # noqa: E402
from cnnlab.utils.io import write_json_atomic  # noqa: E402

NETS = {"lenet5": ("lenet5", 32),
        "bn-cnn": ("conv3-32 > bn > relu > maxpool2 > conv3-64 > bn > relu > maxpool2 > conv3-128 > bn > relu > "
                   "maxpool2 > fc10", 16)}
METHODS = ("scratch", "fine-tune", "freeze all-but-head", "probe logreg", "probe svm")


def digits_a_b(folder: Path, seed: int) -> tuple[str, str]:
    """A: every 0-4 digit; B: 27 per class of 5-9 as the training pool (20 train + 7 validation after cnnlab's
    carve) and the other 5-9 digits as the test split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = np.rint(d.images * 255 / 16).astype(np.uint8), d.target
    a = y < 5
    np.savez(folder / "A.npz", x=x[a], y=y[a], classes=np.array([str(i) for i in range(5)]))
    idx = np.flatnonzero(~a)
    np.random.default_rng(seed).shuffle(idx)
    pool = np.concatenate([idx[y[idx] == c][:27] for c in range(5, 10)])
    test = np.setdiff1d(idx, pool)
    np.savez(folder / f"B{seed}.npz", x=x[pool], y=y[pool] - 5, x_test=x[test], y_test=y[test] - 5,
             classes=np.array([str(i) for i in range(5, 10)]))
    return str(folder / "A.npz"), str(folder / f"B{seed}.npz")


def measure(net: str, seed: int, folder: Path) -> dict[str, float]:
    model, size = NETS[net]
    common = dict(model=model, image_size=size, threads=1, quiet=True, seed=seed, epochs=20, overwrite=True)
    data_a, data_b = digits_a_b(folder, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = train(common, data=data_a, augment="rotate:15,translate:0.1,stretch:0.1",
                     out=str(folder / f"{net}-A{seed}"))
        acc = {"scratch": train(common, data=data_b, out=str(folder / f"{net}-s{seed}")).test_accuracy,
               "fine-tune": train(common, data=data_b, init=str(base.run_dir),
                                  out=str(folder / f"{net}-f{seed}")).test_accuracy,
               "freeze all-but-head": train(common, data=data_b, init=str(base.run_dir), freeze="all-but-head",
                                            out=str(folder / f"{net}-h{seed}")).test_accuracy}
    features = extract_features(str(base.run_dir), "pre-logits", data_b, seed=seed)
    for clf in ("logreg", "svm"):
        acc[f"probe {clf}"] = fit_probe(features, clf).test_accuracy
    return acc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", help="where the runs go (default: a temporary folder)")
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        results = {net: [measure(net, seed, folder) for seed in range(args.seeds)] for net in NETS}
        seconds = time.perf_counter() - start
    print(f"digits 0-4 -> 5-9, 20 training images per class, test accuracy over {args.seeds} seeds "
          f"({seconds:.0f} s)")
    print(f"{'method':<22}" + "".join(f"{net + ' mean ± std':>22}{'per seed':>26}" for net in NETS))
    for method in METHODS:
        line = f"{method:<22}"
        for net in NETS:
            vals = np.array([r[method] for r in results[net]])
            per_seed = " / ".join(f"{100 * v:.1f}" for v in vals)
            line += f"{100 * vals.mean():>14.1f} ± {100 * vals.std(ddof=1) if len(vals) > 1 else 0:4.1f}{per_seed:>26}"
        print(line)
    if args.json:
        write_json_atomic(args.json, {"results": results, "seconds": seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
