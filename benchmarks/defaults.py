"""Defaults across the families: every zoo family trained on the digits by `cnnlab.train` with its
defaults alone (only the image size and a fixed, small epoch budget are given), test accuracy and time.

Issue 16: with SGD at lr 0.1 for every model, VGG-11 (with or without BN) and LeNet-5 with ReLU and max
pooling ended at chance level with exit 0. The check is that each family ends well above chance: test
accuracy ≥ THRESHOLD (chance is 0.10 on the ten digits). Quick mode gives every family EPOCHS_QUICK epochs
(the heavy VGG-11 pair trains on a quarter of the images per class, stated in its row); full mode uses the
defaults' own epoch count and all images. Each run is seeded; the time is cnnlab's own training seconds
(validation excluded), measured at the harness's pinned thread count.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings

from .harness import Check, Mode, Result

NAME = "defaults"
THRESHOLD = 0.80
EPOCHS_QUICK = 5

# (label, model, model options, image size, images per class in quick mode (None: all)). The sizes are the
# smallest each architecture takes whole (VGG's five pools and GoogLeNet's /32 need 32×32), and 16×16 for
# ResNet-18 with the CIFAR stem (no down-sampling stem: 32×32 costs 4× as much on two cores).
FAMILIES = (
    ("LeNet-1", "lenet1", {}, 28, None),
    ("LeNet-5", "lenet5", {}, 32, None),
    ("LeNet-5, ReLU + max-pool", "lenet5", {"act": "relu", "pool": "max"}, 32, None),
    ("notation net", "conv5-6p2 > relu > maxpool2 > conv5-16p2 > relu > maxpool2 > fc100 > relu > fc10", {}, 28,
     None),
    ("VGG-11", "vgg11", {}, 32, 40),
    ("VGG-11-BN", "vgg11_bn", {}, 32, 40),
    ("ResNet-18, CIFAR stem", "resnet18", {"stem": "cifar"}, 16, None),
    ("MobileNet v1", "mobilenet_v1", {}, 32, None),
    ("GoogLeNet", "googlenet", {}, 32, None),
)


def train_family(model: str, options: dict, image_size: int, epochs: int | None, limit: int | None,
                 threads: int, seed: int = 0) -> dict:
    """One run with cnnlab's defaults: test accuracy, training seconds, the learning rate the defaults
    chose for this model, and the chance-level note if the run raised it."""
    from cnnlab.errors import CnnlabWarning
    from cnnlab.train import train

    extra = {"epochs": epochs} if epochs else {}
    if limit:
        extra["limit_per_class"] = limit
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CnnlabWarning)
        result = train(model=model, data="digits", model_opts=dict(options), image_size=image_size, seed=seed,
                       threads=threads, quiet=True, out=f"{tmp}/run", **extra)
        lr = _run_lr(result.run_dir)
    notes = [str(w.message) for w in caught if issubclass(w.category, CnnlabWarning)]
    chance = [n for n in notes if "chance level" in n]
    return {"test_accuracy": round(result.test_accuracy, 4), "seconds": round(result.seconds, 2),
            "epochs": result.epochs, "params": result.params, "lr": lr, "chance_note": chance[0] if chance else None,
            "notes": notes, "val_accuracy_per_epoch": [round(r["val_acc"], 4) for r in result.history]}


def _run_lr(run_dir) -> float | str:
    """The peak learning rate the run used, as resolved and saved in its config (the epochs' records
    hold the scheduled value of the moment)."""
    from cnnlab.runs import Run

    return Run.open(run_dir).config.lr


def run(mode: Mode) -> Result:
    from cnnlab.train import TrainConfig

    defaults = TrainConfig()
    epochs = mode.pick(EPOCHS_QUICK, None, smoke=1)
    families = FAMILIES[:2] if mode.smoke else FAMILIES
    figures: dict = {"threshold": THRESHOLD, "epochs": epochs or defaults.epochs, "families": {}}
    rows, checks = [], []
    for label, model, options, size, limit in families:
        per_class = limit if epochs else None  # full mode: all images
        r = train_family(model, options, size, epochs, per_class, mode.threads)
        figures["families"][label] = {"model": model, "options": options, "image_size": size,
                                      "limit_per_class": per_class, **r}
        data = f"digits at {size}×{size}" + (f", {per_class} images per class" if per_class else "")
        lr = f"lr {r['lr']:g}, " if isinstance(r["lr"], (int, float)) else ""
        warn = "; **chance-level warning**" if r["chance_note"] else ""
        rows.append((f"{label} (`{model}`{''.join(f' {k}={v}' for k, v in options.items())}), {data}",
                     f"test accuracy **{r['test_accuracy']:.4f}** after {r['epochs']} epochs, {r['seconds']:.1f} s "
                     f"of training ({lr}{r['params']:,} parameters){warn}"))
        checks.append(Check(f"{label}: test accuracy with defaults alone", r["test_accuracy"], ">=", THRESHOLD,
                            "well above chance (0.10)"))
    notes = [f"every run uses cnnlab.train's defaults ({_label(defaults)}), seed 0, with only the image size and "
             f"{'the epoch budget of ' + str(epochs) if epochs else 'the default epoch count'} given"]
    return Result(NAME, "Defaults across the families (digits)", figures, rows, checks, notes)


def _label(c) -> str:
    return (f"{c.optimizer.upper()}{'+Nesterov' if c.nesterov and c.optimizer == 'sgd' else ''}, lr {c.lr}, "
            f"{c.schedule}, batch {c.batch_size}, label smoothing {c.label_smoothing:g}, weight decay "
            f"{c.weight_decay:g}")
