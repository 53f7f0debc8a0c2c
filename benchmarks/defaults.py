"""Defaults across the families: every zoo family trained on the digits by `cnnlab.train` with its
defaults alone (only the image size is given; the epoch count is the defaults' own), test accuracy and
time.

Issue 16: with SGD at lr 0.1 for every model, VGG-11 (with or without BN) and LeNet-5 with ReLU and max
pooling ended at chance level with exit 0. The check is that each family ends well above chance: test
accuracy >= THRESHOLD (chance is 0.10 on the ten digits). Quick mode trains the families that fit its
minutes on two cores; `--full` adds GoogLeNet, ResNet-18 and VGG-11 ± BN (minutes each at one thread). Each run is
seeded; the time is cnnlab's own training seconds (validation excluded), at the harness's pinned threads.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings

from .harness import Check, Mode, Result

NAME = "defaults"
THRESHOLD = 0.80

# (label, model, model options, image size, full mode only). The sizes are the smallest each architecture
# takes whole (VGG's five pools and GoogLeNet's /32 need 32×32), and 16×16 for ResNet-18 with the CIFAR
# stem (no down-sampling stem: 32×32 costs 4× as much on two cores).
FAMILIES = (
    ("LeNet-1", "lenet1", {}, 28, False),
    ("LeNet-5", "lenet5", {}, 32, False),
    ("LeNet-5, ReLU + max-pool", "lenet5", {"act": "relu", "pool": "max"}, 32, False),
    ("notation net", "conv5-6p2 > relu > maxpool2 > conv5-16p2 > relu > maxpool2 > fc100 > relu > fc10", {}, 28,
     False),
    ("MobileNet v1", "mobilenet_v1", {}, 32, False),
    ("GoogLeNet", "googlenet", {}, 32, True),
    ("ResNet-18, CIFAR stem", "resnet18", {"stem": "cifar"}, 16, True),
    ("VGG-11", "vgg11", {}, 32, True),
    ("VGG-11-BN", "vgg11_bn", {}, 32, True),
)


def train_family(model: str, options: dict, image_size: int, epochs: int | None, threads: int,
                 seed: int = 0) -> dict:
    """One run with cnnlab's defaults (`epochs` None: theirs): test accuracy, training seconds, the
    learning rate and batch size the defaults chose, and the chance-level note if the run raised it."""
    from cnnlab.errors import CnnlabWarning
    from cnnlab.runs import Run
    from cnnlab.train import train

    extra = {"epochs": epochs} if epochs else {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        result = train(model=model, data="digits", model_opts=dict(options), image_size=image_size, seed=seed,
                       threads=threads, quiet=True, out=f"{tmp}/run", **extra)
        saved = Run.open(result.run_dir).config  # the numbers by-model and by-data resolved to
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    chance = [n for n in notes if "chance level" in n]
    return {"test_accuracy": round(result.test_accuracy, 4), "seconds": round(result.seconds, 2),
            "epochs": result.epochs, "params": result.params, "lr": saved.lr, "batch_size": saved.batch_size,
            "chance_note": chance[0] if chance else None, "notes": notes,
            "val_accuracy_per_epoch": [round(r["val_acc"], 4) for r in result.history]}


def run(mode: Mode) -> Result:
    from cnnlab.train import TrainConfig

    defaults = TrainConfig()
    epochs = 1 if mode.smoke else None  # None: the defaults' own epoch count
    families = [f for f in FAMILIES if mode.full or not f[4]][:2 if mode.smoke else None]
    figures: dict = {"threshold": THRESHOLD, "epochs": epochs or defaults.epochs, "families": {}}
    rows, checks = [], []
    for label, model, options, size, _ in families:
        try:
            r = train_family(model, options, size, epochs, mode.threads)
        except Exception as exc:  # a diverged run (NaN loss) is a result here, not a crash of the benchmark
            r = {"error": f"{type(exc).__name__}: {exc}", "test_accuracy": None}
        figures["families"][label] = {"model": model, "options": options, "image_size": size, **r}
        what = f"{label} (`{model}`{''.join(f' {k}={v}' for k, v in options.items())}), digits at {size}×{size}"
        if r["test_accuracy"] is None:
            rows.append((what, f"**failed**: {r['error']}"))
        else:
            warn = "; **chance-level warning**" if r["chance_note"] else ""
            rows.append((what, f"test accuracy **{r['test_accuracy']:.4f}** after {r['epochs']} epochs, "
                               f"{r['seconds']:.1f} s of training (lr {r['lr']:g}, batch {r['batch_size']}, "
                               f"{r['params']:,} parameters){warn}"))
        checks.append(Check(f"{label}: test accuracy with defaults alone", r["test_accuracy"], ">=", THRESHOLD,
                            "well above chance (0.10)"))
    notes = [f"every run uses cnnlab.train's defaults ({_label(defaults)}), seed 0, with only the image size given"]
    if not mode.full:
        notes.append("quick mode leaves out GoogLeNet, ResNet-18, VGG-11 and VGG-11-BN (minutes each on one thread): "
                     "`python -m benchmarks --full --only defaults` trains them")
    return Result(NAME, "Defaults across the families (digits)", figures, rows, checks, notes)


def _label(c) -> str:
    sgd = c.optimizer == "sgd"
    return (f"{c.optimizer.upper()}{'+Nesterov' if c.nesterov and sgd else ''}, lr {c.lr}, {c.schedule} over "
            f"{c.epochs} epochs, batch {c.batch_size or 'by data'}, label smoothing {c.label_smoothing:g}, "
            f"weight decay {c.weight_decay:g}")
