"""The conventional training loops cnnlab's time to accuracy is measured against, each named for exactly
what it is. All three feed a per-sample `torch.utils.data.Dataset` through a `DataLoader` (one image at
a time in Python, collated per batch, no worker processes), as tutorials do.

1. `pytorch_examples_mnist`: the recipe of pytorch/examples `mnist/main.py` (read from the repository):
   its own network `Net` — Conv2d(1, 32, 3, 1) → ReLU → Conv2d(32, 64, 3, 1) → ReLU → max_pool2d(2) →
   Dropout(0.25) → flatten → Linear(9216, 128) → ReLU → Dropout(0.5) → Linear(128, 10) → log_softmax,
   trained with F.nll_loss; `optim.Adadelta(model.parameters(), lr=args.lr)` with `--lr` default 1.0;
   `StepLR(optimizer, step_size=1, gamma=args.gamma)` with `--gamma` default 0.7, stepped once per epoch;
   `--batch-size` default 64; `transforms.ToTensor()` then `transforms.Normalize((0.1307,), (0.3081,))`
   per sample. Linear(9216, 128) fixes its input at 28×28 (MNIST's size), so the images are resized to
   28×28 once beforehand (antialiased bilinear), and ToTensor is done on uint8 tensors (no PIL decode is
   charged to it). The example shuffles only on its accelerator path (`'shuffle': True` sits in the
   CUDA/accelerator kwargs); here it always shuffles, which can only help it.
2. `same_recipe_per_sample`: cnnlab's model (LeNet-5) and cnnlab's default recipe (optimizer, one-cycle
   schedule, label smoothing, batch size, from TrainConfig) in the per-sample loop: only the data pipeline
   and the loop differ from `cnnlab.train`.
3. `per_sample_sgd`: issue 16's conventional loop: LeNet-5, SGD lr 0.05, momentum 0.9, batch 64, plain
   cross-entropy, no schedule, normalised with the training split's mean and std.

Training time is counted per epoch; the test accuracy after each epoch is measured outside the clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

# pytorch/examples mnist/main.py: Normalize((0.1307,), (0.3081,)), MNIST's mean and std
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class ExampleNet(nn.Module):
    """`Net` of pytorch/examples mnist/main.py, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


class PerSample(torch.utils.data.Dataset):
    """ToTensor (uint8 → float in [0, 1]) and Normalize, one sample at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i].float().div(255.0)  # ToTensor
        return (x - self.mean) / self.std, int(self.labels[i])  # Normalize


@dataclass
class Outcome:
    """Training seconds to the target (or for the whole budget when it was never reached)."""

    seconds: float
    seconds_per_epoch: list[float]
    epochs_run: int
    epochs_to_target: int | None
    best_accuracy: float
    accuracy_per_epoch: list[float]

    def to_dict(self) -> dict:
        return {"seconds": round(self.seconds, 3), "seconds_per_epoch": [round(s, 3) for s in self.seconds_per_epoch],
                "epochs_run": self.epochs_run,
                "epochs_to_target": self.epochs_to_target, "best_accuracy": round(self.best_accuracy, 4),
                "accuracy_per_epoch": [round(a, 4) for a in self.accuracy_per_epoch]}


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of `model` on pre-normalised tensors (eval mode; the training mode is restored)."""
    was = model.training
    model.eval()
    hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    model.train(was)
    return hits / len(y)


def epochs_per_sample(recipe: str, train_images: torch.Tensor, train_labels: torch.Tensor,
                      test_images: torch.Tensor, test_labels: torch.Tensor, *, mean: float, std: float,
                      target: float, max_epochs: int, seed: int) -> Iterator[tuple[float, float]]:
    """Train one baseline an epoch per `next()`, yielding (training seconds, test accuracy) for each, until
    the test accuracy reaches `target` or `max_epochs` pass (a generator, so the caller can interleave
    baselines epoch by epoch). Images are uint8 N×1×H×W at the size the recipe's network takes;
    `mean`/`std` are used unless the recipe fixes them."""
    from cnnlab.models import build_model
    from cnnlab.train import TrainConfig
    from cnnlab.train.optim import LRSchedule, build_optimizer, default_batch_size, default_lr

    torch.manual_seed(seed)
    schedule = step_lr = None
    if recipe == "pytorch_examples_mnist":
        mean, std, batch = MNIST_MEAN, MNIST_STD, 64
        model = ExampleNet()
        opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
        step_lr = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

        def loss_fn(out, y):
            return F.nll_loss(out, y)
    else:
        model = build_model("lenet5", num_classes=10, in_channels=1, input_size=tuple(train_images.shape[-2:]))
        if recipe == "same_recipe_per_sample":
            cfg = TrainConfig(seed=seed).validate()
            if cfg.batch_size is None:  # the batch size cnnlab's defaults pick for this many images
                cfg = cfg.replace(batch_size=default_batch_size(len(train_labels)))
            if isinstance(cfg.lr, str):  # --lr by-model: the rate they pick for this network and batch
                cfg = cfg.replace(lr=default_lr(model, cfg.batch_size))
            batch, smoothing = cfg.batch_size, cfg.label_smoothing
            opt = build_optimizer(model, cfg)
            schedule = LRSchedule(cfg, -(-len(train_labels) // batch))
            max_epochs = min(max_epochs, cfg.epochs)  # its schedule ends there
        elif recipe == "per_sample_sgd":
            batch, smoothing = 64, 0.0
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        else:
            raise ValueError(f"unknown baseline {recipe!r}")

        def loss_fn(out, y):
            return F.cross_entropy(out, y, label_smoothing=smoothing)

    loader = torch.utils.data.DataLoader(PerSample(train_images, train_labels, mean, std), batch_size=batch,
                                         shuffle=True, generator=torch.Generator().manual_seed(seed))
    test_x = (test_images.float() / 255.0 - mean) / std
    step = 0
    for _ in range(max_epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loader:
            if schedule is not None:
                schedule.apply(opt, step)
            step += 1
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        if step_lr is not None:
            step_lr.step()
        seconds = time.perf_counter() - start
        acc = accuracy(model, test_x, test_labels)
        yield seconds, acc
        if acc >= target:
            return


def outcome(epochs: list[tuple[float, float]], target: float) -> Outcome:
    """The time to `target` from per-epoch (seconds, test accuracy) pairs."""
    times, accs = [t for t, _ in epochs], [a for _, a in epochs]
    reached = next((i + 1 for i, a in enumerate(accs) if a >= target), None)
    spent = sum(times[:reached]) if reached else sum(times)
    return Outcome(spent, times, len(accs), reached, max(accs), accs)


def train_per_sample(recipe: str, *args, target: float, **kwargs) -> Outcome:
    """Run one baseline to its end (see epochs_per_sample)."""
    return outcome(list(epochs_per_sample(recipe, *args, target=target, **kwargs)), target)
