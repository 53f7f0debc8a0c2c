"""Each batched augmentation's effect, identity at probability 0, determinism under a seed, and the
spec grammar's one-line errors."""

from __future__ import annotations

import math

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


def gradients(n=16, h=41, w=41):
    """Channel 0 rises 2 per pixel to the right, channel 1 rises 2 per pixel downwards, channel 2 is flat:
    bilinear resampling of a linear ramp is exact, so local slopes read off the warp's scale."""
    xs = torch.arange(w).view(1, w).expand(h, w)
    ys = torch.arange(h).view(h, 1).expand(h, w)
    img = torch.stack([40 + 2 * xs, 40 + 2 * ys, torch.full((h, w), 90)])
    return img.unsqueeze(0).expand(n, -1, -1, -1).to(torch.uint8).contiguous()


def centre_slopes(y, r=6):
    """(slope along x of channel 0, slope along y of channel 1) at the centre, relative to the input's 2/px."""
    h, w = y.shape[2:]
    cy, cx = h // 2, w // 2
    sx = (y[:, 0, cy, cx + r] - y[:, 0, cy, cx - r]) / (2 * r * 2)
    sy = (y[:, 1, cy + r, cx] - y[:, 1, cy - r, cx]) / (2 * r * 2)
    return sx, sy


def test_scale_is_the_resnet_window_isotropic_and_inside():
    y = build_augmentation("scale", DS)(gradients(), gen())
    sx, sy = centre_slopes(y)
    assert torch.allclose(sx, sy, atol=1e-3)  # isotropic
    assert (sx >= 224 / 480 - 1e-3).all() and (sx <= 224 / 256 + 1e-3).all() and sx.std() > 0.02
    assert float(y[:, 2].min()) > 89  # the window stays inside the image: no zero fill


def test_rrc_area_and_aspect():
    y = build_augmentation("rrc:0.25-0.5", DS)(gradients(), gen())
    sx, sy = centre_slopes(y)
    area, aspect = sx * sy, sx / sy
    assert (area > 0.25 - 1e-3).all() and (area < 0.5 + 1e-3).all()
    assert (aspect > 3 / 4 - 1e-3).all() and (aspect < 4 / 3 + 1e-3).all() and aspect.std() > 0.02


def test_stretch_scales_x_and_y_independently():
    y = build_augmentation("stretch:0.2", DS)(gradients(), gen())
    sx, sy = centre_slopes(y)
    for s in (sx, sy):  # slope = 1/s with s ~ U[0.8, 1.2]
        assert (s > 1 / 1.2 - 1e-3).all() and (s < 1 / 0.8 + 1e-3).all()
    assert (sx - sy).abs().max() > 0.05


def test_translate_moves_a_dot_without_losing_it():
    x = torch.zeros(16, 1, 33, 33, dtype=torch.uint8)
    x[:, :, 16, 16] = 255
    y = build_augmentation("translate:0.15", DS)(x, gen())[:, 0]
    mass = y.sum(dim=(1, 2))
    assert torch.allclose(mass, torch.full_like(mass, 255.0), rtol=1e-4)  # bilinear weights sum to 1
    grid = torch.arange(33.0)
    cy = (y.sum(2) * grid).sum(1) / mass - 16
    cx = (y.sum(1) * grid).sum(1) / mass - 16
    assert (cx.abs() <= 0.15 * 33 + 1e-3).all() and (cy.abs() <= 0.15 * 33 + 1e-3).all()
    assert cx.abs().max() > 1 and cy.abs().max() > 1 and cx.std() > 0.5


def test_rotate_keeps_a_centred_disc_and_turns_a_bar():
    g = torch.arange(33.0) - 16
    r = (g.view(33, 1) ** 2 + g.view(1, 33) ** 2).sqrt()
    disc = (r <= 10).to(torch.uint8).mul(200).expand(16, 1, 33, 33)
    bar = ((g.view(33, 1).abs() <= 2) & (g.view(1, 33).abs() <= 12)).to(torch.uint8).mul(200).expand(16, 1, 33, 33)
    aug = build_augmentation("rotate:40", DS)
    d_disc = (aug(disc, gen()) - disc.float()).abs().mean(dim=(1, 2, 3))
    yb = aug(bar, gen())
    d_bar = (yb - bar.float()).abs().mean(dim=(1, 2, 3))
    assert d_disc.max() < 8 and (d_bar > 20).sum() >= 8  # rotation-invariant shape vs a turned bar (edges blur)
    assert torch.allclose(yb.sum(dim=(1, 2, 3)), bar.float().sum(dim=(1, 2, 3)), rtol=0.02)  # rigid: area kept


def test_shear_is_horizontal():
    g = torch.arange(33)
    rows = (g.view(33, 1) * 7 % 256).expand(33, 33).to(torch.uint8).expand(16, 1, 33, 33)  # horizontal stripes
    cols = rows.transpose(2, 3)  # vertical stripes
    aug = build_augmentation("shear:10", DS)
    yr, yc = aug(rows, gen()), aug(cols, gen())
    assert torch.allclose(yr[..., 16], rows[..., 16].float(), atol=1e-3)  # rows slide sideways only
    assert torch.allclose(yc[..., 16, :], cols[..., 16, :].float(), atol=1e-3)  # the centre row stays put
    # on a ramp rising 7 per pixel, a horizontal shift by t·dy pixels adds 7·t·dy everywhere in a row:
    # opposite amounts on the top and bottom rows (dy = -16, +16)
    top = (yc[:, 0, 0, 8:25] - cols[:, 0, 0, 8:25].float())
    bottom = (yc[:, 0, 32, 8:25] - cols[:, 0, 32, 8:25].float())
    assert torch.allclose(top, top[:, :1].expand_as(top), atol=1e-3) and torch.allclose(top, -bottom, atol=1e-3)
    shift = top[:, 0] / 7
    assert (shift.abs() <= 16 * math.tan(math.radians(10)) + 1e-3).all() and shift.abs().max() > 1


def test_lens_is_radial():
    g = torch.arange(33.0) - 16
    r = (g.view(33, 1) ** 2 + g.view(1, 33) ** 2).sqrt()
    rings = (r * 15 % 256).to(torch.uint8).expand(16, 1, 33, 33)
    y = build_augmentation("lens:0.4", DS)(rings, gen())
    for sym in (y.flip(2), y.flip(3), y.transpose(2, 3)):  # a radial warp keeps the rings' symmetries
        assert torch.allclose(y, sym, atol=1e-3)
    assert torch.allclose(y[..., 16, 16], rings[..., 16, 16].float(), atol=1e-3)  # centre fixed
    assert (y - rings.float()).abs().mean(dim=(1, 2, 3)).max() > 5


def luma(x):
    return (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)


def test_jitter_saturation_keeps_luma_contrast_keeps_mean():
    x = torch.randint(100, 151, (8, 3, 6, 6), dtype=torch.uint8, generator=gen(5))
    sat = build_augmentation("jitter:0:0:0.5", DS)(x, gen())
    assert torch.allclose(luma(sat), luma(x), atol=1e-3)
    chroma_in, chroma_out = x.float() - luma(x).unsqueeze(1), sat - luma(sat).unsqueeze(1)
    factor = (chroma_out * chroma_in).sum(dim=(1, 2, 3)) / (chroma_in ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(chroma_out, factor.view(-1, 1, 1, 1) * chroma_in, atol=1e-3)
    assert (factor >= 0.5 - 1e-4).all() and (factor <= 1.5 + 1e-4).all() and factor.std() > 0.05
    con = build_augmentation("jitter:0:0.5:0", DS)(x, gen())
    assert torch.allclose(luma(con).mean(dim=(1, 2)), luma(x).mean(dim=(1, 2)), atol=1e-3)
    assert (luma(con).std(dim=(1, 2)) / luma(x).std(dim=(1, 2)) - 1).abs().max() > 0.05


def test_erase_fills_one_box_of_the_asked_area():
    x = batch(n=16, h=20, w=20)
    e = build_augmentation("erase:0.2-0.3@1", DS)(x, gen())
    changed = (e != x.float()).any(1)
    for m in changed:
        ys, xs = torch.nonzero(m, as_tuple=True)
        box = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert box.all() and box.numel() == m.sum()  # exactly one filled rectangle
        assert 0.15 * 400 <= box.numel() <= 0.35 * 400


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_batch_device_and_is_reproducible_there():
    aug = build_augmentation(",".join(ALL), DS)
    x = batch().cuda()
    y1, y2 = aug(x, gen(1)), aug(x, gen(1))
    assert y1.device == x.device and torch.equal(y1, y2)


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
    rest = list(resumed)
    # zip() stops at the shorter side: without these counts an empty or short resumed epoch would pass.
    assert len(batches) == 7 and len(rest) == len(batches) - 4  # 50 images at batch 8: 7 steps, 3 left after 4
    for (a, la), (b, lb) in zip(batches[4:], rest, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


def test_loader_holds_uint8_without_a_float_copy():
    ds = fake_dataset(batch(50))
    loader = BatchLoader(ds.train, 16, shuffle=True, mean=torch.full((3,), 0.5), std=torch.full((3,), 0.25),
                         channels_last=True)
    assert loader.images.dtype == torch.uint8 and loader.images.data_ptr() == ds.train.images.data_ptr()
    xs = [x for x, _ in loader]
    assert [len(x) for x in xs] == [16, 16, 16, 2] and xs[0].dtype == torch.float32
    assert xs[0].is_contiguous(memory_format=torch.channels_last)
    first = ds.train.images[loader.indices()[:16]].float()
    assert torch.allclose(xs[0], (first / 255 - 0.5) / 0.25, atol=1e-5)
