"""Test-time augmentation: the views the lectures' recipes name (flip; 4 corners + centre; + their mirror
images; 10 crops at the ResNet paper's 5 scales), evaluated as batched tensors, probabilities averaged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.eval.ensemble import Member, predict_split
from cnnlab.eval.tta import TTA_NAMES, check_tta, num_views, tta_log_proba, views_numpy, views_torch
from cnnlab.runs import Run
from cnnlab.train import train


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tta") / "run"
    train(epochs=1, limit_per_class=40, threads=1, quiet=True, out=str(out))
    return Run.open(out)


class FlipSymmetric(nn.Module):
    """f(x) averaged with f(mirror image of x): a model whose output ignores a horizontal flip."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return (self.inner(x) + self.inner(x.flip(-1))) / 2


def _member(run: Run, model: nn.Module) -> Member:
    return Member("m", model, run.preprocess.mean, run.preprocess.std)


def test_flip_tta_of_a_flip_symmetric_model_equals_no_tta(small_run):
    split = small_run.dataset().test
    symmetric = FlipSymmetric(small_run.model())
    plain, _ = predict_split([_member(small_run, symmetric)], split)
    flipped, _ = predict_split([_member(small_run, symmetric)], split, tta="flip")
    assert torch.allclose(plain, flipped, atol=1e-6)
    # ...and the same TTA does change an ordinary (asymmetric) model's probabilities
    raw, _ = predict_split([_member(small_run, small_run.model())], split)
    raw_flip, _ = predict_split([_member(small_run, small_run.model())], split, tta="flip")
    assert (raw - raw_flip).abs().max() > 1e-3


def test_ten_crop_makes_ten_views_of_the_input_size_per_image():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 28, 24)
    views, weights = views_torch(x, "10crop")
    assert views.shape == (10, 3, 2, 28, 24) and torch.allclose(weights, torch.full((10,), 0.1))
    # the ResNet recipe's crops: image resized by 256/224, then 4 corners + centre, then their mirror images
    big = F.interpolate(x, size=(round(28 * 256 / 224), round(24 * 256 / 224)), mode="bilinear",
                        align_corners=False)
    bh, bw = big.shape[-2:]
    crops = [big[..., (bh - 28) // 2:(bh - 28) // 2 + 28, (bw - 24) // 2:(bw - 24) // 2 + 24],
             big[..., :28, :24], big[..., :28, bw - 24:], big[..., bh - 28:, :24], big[..., bh - 28:, bw - 24:]]
    expected = torch.stack(crops + [c.flip(-1) for c in crops])
    assert torch.equal(views, expected)
    assert len({tuple(v.flatten()[:50].tolist()) for v in views.transpose(0, 1)[0]}) == 10  # all distinct


def test_view_counts_and_numpy_views_match_torch():
    assert [num_views(n) for n in TTA_NAMES] == [1, 2, 5, 10, 50]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 20, 17)
    for name in TTA_NAMES:
        tv, tw = views_torch(x, name)
        nv, nw = views_numpy(x.numpy(), name)
        assert nv.shape == tuple(tv.shape), name
        assert abs(float(tw.sum()) - 1) < 1e-6 and abs(float(nw.sum()) - 1) < 1e-6
        assert torch.allclose(torch.from_numpy(nv), tv, atol=1e-5), name  # torch's bilinear is the oracle
        assert torch.allclose(torch.from_numpy(nw), tw)
    _, ms = views_torch(x, "multiscale")
    assert len(ms) == 42 and float(ms[0]) == pytest.approx(5 / 50)  # scale 1: 2 distinct views, weight 5 each


def test_views_go_through_the_model_as_batches_not_per_image():
    calls = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    x = torch.randn(6, 3, 16, 16)
    out = tta_log_proba(model, x, "10crop", max_batch=512)
    assert calls == [60] and out.shape == (6, 4)
    calls.clear()
    tta_log_proba(model, x, "multiscale", max_batch=100)
    assert calls == [100, 100, 52]  # 42 distinct views x 6 images in chunks of 100
    # the average is of probabilities, weighted by the recipe
    views, weights = views_torch(x, "10crop")
    probs = torch.stack([model(v).softmax(1) for v in views])
    assert torch.allclose(out.exp(), (probs * weights.view(-1, 1, 1)).sum(0), atol=1e-6)


def test_unknown_tta_is_one_line():
    with pytest.raises(ConfigError, match=r"--tta 'rotate': unknown test-time augmentation; known: none, flip"):
        check_tta("rotate")
    assert check_tta("10-crop") == "10crop" and check_tta("none") is None
