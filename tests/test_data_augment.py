"""Each batched augmentation's effect, identity at probability 0, determinism under a seed, and the
spec grammar's one-line errors."""

from __future__ import annotations

import pytest
import torch

from cnnlab.data import BatchLoader, Dataset, Split, build_augmentation, parse_spec
from cnnlab.errors import ConfigError

ALL = ["flip", "crop:4", "scale", "scale:0.5-0.9", "rrc", "rotate:20", "translate:0.1", "shear:10",
       "stretch:0.2", "lens:0.3", "jitter:0.3", "jitter:0.1:0.2:0.3", "pca", "erase"]


def batch(n=8, c=3, h=16, w=20, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def fake_dataset(images):
    labels = torch.zeros(len(images), dtype=torch.long)
    s = Split(images, labels)
    return Dataset("fake", ["a"], s, s, s)


DS = fake_dataset(batch(64))


@pytest.mark.parametrize("spec", ALL)
def test_shape_range_and_determinism(spec):
    aug = build_augmentation(spec, DS)
    x = batch()
    y1, y2, y3 = aug(x, gen(1)), aug(x, gen(1)), aug(x, gen(2))
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, y3)
    assert y1.dtype in (torch.uint8, torch.float32) and float(y1.min()) >= 0 and float(y1.max()) <= 255
    assert torch.equal(x, batch())  # input untouched


@pytest.mark.parametrize("spec", ALL)
def test_identity_at_probability_zero(spec):
    x = batch()
    y = build_augmentation(f"{spec}@0", DS)(x, gen())
    assert torch.allclose(y.float(), x.float(), atol=1e-3)


def test_flip_mirrors():
    x = batch()
    y = build_augmentation("flip@1", DS)(x, gen())
    assert torch.equal(y, x.flip(3))
    half = build_augmentation("flip", DS)(batch(200), gen())
    flipped = (half == batch(200).flip(3)).flatten(1).all(1).sum().item()
    assert 60 < flipped < 140


def test_crop_keeps_size_and_shifts_content():
    x = batch(n=64)
    y = build_augmentation("crop:4", DS)(x, gen())
    assert y.shape == x.shape and y.dtype == torch.uint8
    # each output is a translate of its input: some sample shifted, zero-padding visible somewhere
    assert any(not torch.equal(y[i], x[i]) for i in range(64)) and (y == 0).any()
    for i in range(8):  # the window lies inside the padded image
        found = any(torch.equal(y[i], torch.nn.functional.pad(x[i], (4,) * 4)[:, a:a + 16, b:b + 20])
                    for a in range(9) for b in range(9))
        assert found


def test_pca_moves_colours_along_principal_axis():
    # training pixels vary only along (1, 1, 0)/sqrt(2): the top principal axis
    t = torch.rand(64, 1, 8, 8) * 200
    imgs = torch.cat([t, t, torch.full_like(t, 50)], 1).round().to(torch.uint8)
    aug = build_augmentation("pca:0.5@1", fake_dataset(imgs))
    x = torch.full((16, 3, 4, 4), 100, dtype=torch.uint8)
    d = aug(x, gen()) - x.float()
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-4)  # one offset per image
    off = d[:, :, 0, 0]
    assert off.abs().max() > 0.5
    axis = torch.tensor([1.0, 1.0, 0.0]) / 2 ** 0.5
    resid = off - (off @ axis)[:, None] * axis
    assert resid.abs().max() < 1e-2 * off.abs().max()


def test_jitter_brightness_only_scales():
    x = torch.full((4, 3, 4, 4), 100, dtype=torch.uint8)
    y = build_augmentation("jitter:0.5:0:0", DS)(x, gen())
    ratio = y / 100.0
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio)) and (ratio - 1).abs().max() > 0.01


def test_affine_rotate_180_and_erase_box():
    x = batch(n=4, h=9, w=9)
    y = build_augmentation("rotate:0", DS)(x, gen())
    assert torch.allclose(y.float(), x.float(), atol=1e-3)
    e = build_augmentation("erase:0.2-0.3@1", DS)(x, gen())
    changed = (e != x.float()).any(1).flatten(1).sum(1)
    assert (changed > 0).all() and (changed <= 0.35 * 81).all()


def test_grammar_and_errors():
    ops = parse_spec("flip@0.3, crop:4 ,scale:256-480")
    assert [(o.name, o.p) for o in ops] == [("flip", 0.3), ("crop", 1.0), ("scale", 1.0)]
    assert ops[2].args == [(256.0, 480.0)]
    assert build_augmentation(None, DS) is None and build_augmentation("none", DS) is None
    assert build_augmentation("", DS) is None and build_augmentation(["flip", "crop:2"], DS) is not None
    for bad, needle in [("flop", "'flop'"), ("crop", "'crop'"), ("crop:x", "'crop:x'"),
                        ("flip@1.5", "'flip@1.5'"), ("scale:4-2", "'scale:4-2'")]:
        with pytest.raises(ConfigError, match=needle) as err:
            parse_spec(f"flip,{bad}")
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="RGB"):
        build_augmentation("pca", fake_dataset(batch(c=1)))


def test_loader_with_augment_is_resumable_bitwise():
    ds = fake_dataset(batch(50))
    aug = build_augmentation("flip,crop:2,jitter:0.2", ds)
    mean, std = ds.channel_stats()
    full = BatchLoader(ds.train, 8, shuffle=True, seed=3, mean=mean, std=std, augment=aug)
    full.set_epoch(2)
    batches = list(full)
    resumed = BatchLoader(ds.train, 8, shuffle=True, seed=3, mean=mean, std=std, augment=aug)
    resumed.set_epoch(2, start_step=4)
    for (a, la), (b, lb) in zip(batches[4:], resumed):
        assert torch.equal(a, b) and torch.equal(la, lb)
