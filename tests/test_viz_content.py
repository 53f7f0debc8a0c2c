"""The pictures' content, checked against outside references: PyTorch's own conv and autograd, brute-force
searches, the lectures' receptive-field arithmetic and models whose right answer is known by construction."""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn
from torch.nn import functional as F

from cnnlab.models import build_model
from cnnlab.models.base import SequentialNet
from cnnlab.viz.activations import activation_maps, capture
from cnnlab.viz.attribution import grad_cam, integrated_gradients, occlusion_map, saliency_map
from cnnlab.viz.filters import draw_filters, filter_grid
from cnnlab.viz.layer_select import default_cam_layer, probe_layer, resolve_layer
from cnnlab.viz.top_patches import RunningTopK, top_patches


def _tiles(grid: np.ndarray) -> list[np.ndarray]:
    """The tiles of a drawn grid: connected regions that are not gap (NaN / transparent), in reading order."""
    solid = ~np.isnan(grid) if grid.ndim == 2 else grid[..., 3] > 0
    labels, n = ndimage.label(solid)
    boxes = ndimage.find_objects(labels)
    return [grid[b] for b in sorted(boxes, key=lambda b: (b[0].start, b[1].start))]


# --- filters ---------------------------------------------------------------------------------------------------

def test_filter_grid_has_one_tile_per_kernel_holding_that_kernel():
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    w = model.state_dict()["features.3.weight"]  # C3: 16 filters of 6x5x5
    fg = filter_grid(model, "stage1")  # a stage means its first convolution
    assert fg.layer == "features.3" and fg.tiles == 16 * 6 and not fg.rgb
    tiles = _tiles(fg.grid)
    assert len(tiles) == 16 * 6 and all(t.shape == (5, 5) for t in tiles)
    expected = w / w.abs().amax(dim=(1, 2, 3), keepdim=True)  # each filter scaled by its own largest |weight|
    for k, tile in enumerate(tiles):  # rows = filters, columns = input channels
        np.testing.assert_allclose(tile, expected[k // 6, k % 6].numpy(), rtol=1e-5, atol=1e-6)
    first = filter_grid(model)  # C1: one input channel, 6 tiles in a square grid
    assert first.layer == "features.0" and len(_tiles(first.grid)) == 6
    draw_filters(fg)  # draws without error


def test_rgb_first_layer_is_one_colour_tile_per_filter_min_max_scaled():
    torch.manual_seed(1)
    model = build_model("conv3-5 > relu > maxpool2 > conv3-7 > relu > fc4", in_channels=3, input_size=(8, 8))
    w = model.state_dict()["features.0.weight"]  # (5, 3, 3, 3)
    fg = filter_grid(model)
    assert fg.rgb and fg.tiles == 5
    tiles = _tiles(fg.grid)
    assert len(tiles) == 5
    for k, tile in enumerate(tiles):
        f = w[k]
        want = ((f - f.min()) / (f.max() - f.min())).permute(1, 2, 0).numpy()
        np.testing.assert_allclose(tile[..., :3], want, rtol=1e-5, atol=1e-6)
    second = filter_grid(model, "features.3")  # not the first layer: greyscale, 7 x 5 kernels
    assert not second.rgb and len(_tiles(second.grid)) == 35


def test_filter_grid_caps_filters_and_channels_and_says_so():
    model = build_model("conv3-40 > relu > conv3-30 > relu > fc4", in_channels=1, input_size=(8, 8))
    fg = filter_grid(model, "features.2", max_filters=12, max_channels=5)
    assert len(_tiles(fg.grid)) == 12 * 5
    assert "30 filters of 40×3×3" in fg.title and "first 12 filters × first 5 channels" in fg.title


# --- activations -----------------------------------------------------------------------------------------------

def test_activations_are_the_layer_outputs_even_before_an_in_place_relu():
    torch.manual_seed(0)
    model = build_model("conv3-4p1 > relu > maxpool2 > conv3-6p1 > relu > fc3", in_channels=1,
                        input_size=(12, 12)).eval()
    assert model.features[1].inplace  # the ReLU rewrites the conv's output tensor in place
    x = torch.randn(1, 1, 12, 12)
    layers = [resolve_layer(model, n) for n in ("features.0", "stem", "features.3")]
    maps, logits = activation_maps(model, x, layers)
    conv1 = F.conv2d(x, model.features[0].weight, model.features[0].bias, padding=1)
    assert (conv1 < 0).any()  # there are negative values a leaked in-place ReLU would have zeroed
    torch.testing.assert_close(maps[0].maps, conv1[0])
    torch.testing.assert_close(maps[1].maps, F.max_pool2d(F.relu(conv1), 2)[0])
    conv2 = F.conv2d(F.max_pool2d(F.relu(conv1), 2), model.features[3].weight, model.features[3].bias, padding=1)
    torch.testing.assert_close(maps[2].maps, conv2[0])
    torch.testing.assert_close(logits, model(x))


# --- top patches ---------------------------------------------------------------------------------------------

def test_running_topk_equals_a_full_sort():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(3, 50, generator=g)
    tk = RunningTopK(3, 7)
    for start in range(0, 50, 9):  # uneven batches
        v = data[:, start:start + 9]
        tags = torch.stack([torch.arange(start, start + v.shape[1]).expand(3, -1), torch.zeros(3, v.shape[1],
                                                                                               dtype=torch.long)], 2)
        tk.update(v, tags)
    want = data.sort(1, descending=True)
    torch.testing.assert_close(tk.values, want.values[:, :7])
    assert torch.equal(tk.tags[..., 0], want.indices[:, :7])


NET = "conv3-4p1 > tanh > avgpool2 > conv3-6p1 > tanh > avgpool2 > fc5"  # smooth: every pixel of a field counts


@pytest.mark.parametrize("layer, size, jump", [("stem", 4, 2), ("stage1", 10, 4), ("features.3", 8, 2)])
def test_top_patches_are_the_brute_force_maxima_cropped_to_the_receptive_field(layer, size, jump):
    torch.manual_seed(0)
    model = build_model(NET, in_channels=1, input_size=(16, 16)).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (37, 1, 16, 16), dtype=torch.uint8, generator=g)
    x = (images.float() / 255 - 0.5) / 0.25
    chosen = resolve_layer(model, layer)
    batches = [x[i:i + 8] for i in range(0, len(x), 8)]  # five batches: the running top-k merges across them
    tp = top_patches(model, chosen, batches, images, units=3, top=5)
    # Lectures' arithmetic: conv3 (r 3) -> pool2 (r 4, jump 2) -> conv3 (r 4 + 2*2 = 8) -> pool2 (r 10, jump 4).
    assert tp.patch_size == (size, size) and tp.field.jump == (jump, jump)
    # Brute force: every activation of every image, sorted.
    (acts,), _ = capture(model, [chosen.module], x)
    per_image, where = acts[:, :3].flatten(2).max(2)  # (N, 3)
    order = per_image.sort(0, descending=True)
    for u in range(3):
        assert torch.equal(tp.images[u], order.indices[:5, u])
        torch.testing.assert_close(tp.values[u], order.values[:5, u])
        for r in range(5):
            n, pos = int(tp.images[u, r]), int(where[tp.images[u, r], u])
            i, j = divmod(pos, acts.shape[3])
            assert tuple(tp.positions[u, r].tolist()) == (i, j)
            # Autograd oracle: the input pixels that influence this unit are the field's in-image part.
            xi = x[n:n + 1].clone().requires_grad_(True)
            (a,), _ = capture_grad(model, chosen.module, xi)
            a[0, u, i, j].backward()
            rows, cols = np.nonzero(xi.grad[0, 0].abs().numpy() > 0)
            inside = tp.inside[u, r].numpy()
            r_in, c_in = np.nonzero(inside)
            # the in-image part of the patch is exactly the pixels the unit depends on: same extent ...
            assert (rows.max() - rows.min(), cols.max() - cols.min()) == (r_in.max() - r_in.min(),
                                                                          c_in.max() - c_in.min())
            assert inside.sum() == len(rows)
            # ... and the same pixels (random images: a shifted crop would not match)
            np.testing.assert_array_equal(tp.patches[u, r, 0].numpy()[inside], _crop(images[n, 0].numpy(), rows, cols))
            assert (tp.patches[u, r, 0].numpy()[~inside] == 0).all()
        assert tp.inside[u].sum(dim=(1, 2)).max() <= size * size


def _crop(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return image[rows.min():rows.max() + 1, cols.min():cols.max() + 1].ravel()


def capture_grad(model, module, x):
    """The module's output with its graph (for the autograd oracle)."""
    kept = []
    h = module.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        out = model(x)
    finally:
        h.remove()
    return kept, out


def test_top_patches_size_equals_the_analysis_receptive_field():
    from cnnlab.analysis.summary import summarize

    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    rows = {r.name: r.receptive_field for r in summarize(model, (1, 32, 32)).layers}
    for layer, path in (("stem", "features.2"), ("stage1", "features.5")):
        probe = probe_layer(model, resolve_layer(model, layer).module, (1, 32, 32))
        assert list(probe.field.size) == rows[path]["size"] and list(probe.field.jump) == rows[path]["jump"]
    assert rows["features.2"]["size"] == [6, 6] and rows["features.5"]["size"] == [16, 16]  # the lectures' LeNet


def test_top_patches_refuse_global_and_shared_layers():
    from cnnlab.errors import ConfigError

    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    x = torch.zeros(4, 1, 32, 32)
    imgs = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="outputs"):
        top_patches(model, resolve_layer(model, "classifier.1"), [x], imgs)
    with pytest.raises(ConfigError, match="has 6 units"):
        top_patches(model, resolve_layer(model, "stem"), [x], imgs, units=[6])
    resnet = build_model("resnet18", num_classes=3, in_channels=1, input_size=(32, 32))
    with pytest.raises(ConfigError, match="runs 2 times"):
        top_patches(resnet, resolve_layer(resnet, "layer1.0.relu"), [x], imgs)


# --- occlusion -------------------------------------------------------------------------------------------------

class BrightSquare(nn.Module):
    """Class 0's logit is 6 × (the brightest 4×4 window mean) − 4.5, class 1's is 0: only the brightest window
    counts, so covering the object lowers p(class 0) and covering background cannot."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 4, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 16)

    def forward(self, x):
        score = 6 * self.conv(x).amax(dim=(2, 3)) - 4.5
        return torch.cat([score, torch.zeros_like(score)], 1)


def _object_image() -> torch.Tensor:
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 2:6, 9:13] = 1.0  # the object: top right, off the diagonal (a transposed map would miss it)
    return x


def test_occluding_the_object_lowers_the_class_more_than_occluding_the_background():
    model = BrightSquare().eval()
    x = _object_image()
    occ = occlusion_map(model, x, 0, torch.full_like(x, 0.5), patch=4, stride=2, batch_size=16)
    obj = occ.drop[2:6, 9:13].mean()
    background = occ.drop[10:, :6].mean()
    assert obj > 0.2 and abs(float(background)) < 1e-6
    i, j = divmod(int(occ.drop.argmax()), 16)
    assert 2 <= i < 6 and 9 <= j < 13
    with torch.no_grad():
        assert occ.probability == pytest.approx(float(model(x).softmax(1)[0, 0]))


@pytest.mark.parametrize("patch, stride", [(4, 2), (6, 4), (5, 3)])
def test_occlusion_equals_a_hand_written_loop_over_square_positions(patch, stride):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)).eval()
    x = torch.randn(1, 3, 12, 12)
    base = torch.full_like(x, 0.3)
    occ = occlusion_map(model, x, 2, base, patch=patch, stride=stride, batch_size=5)
    with torch.no_grad():
        p0 = model(x).softmax(1)[0, 2]
        total, count = torch.zeros(12, 12), torch.zeros(12, 12)
        starts = [k * stride for k in range(math.ceil((12 - patch) / stride) + 1)]  # the last may hang over
        for r in starts:
            for c in starts:
                xo = x.clone()
                xo[..., r:r + patch, c:c + patch] = 0.3
                total[r:r + patch, c:c + patch] += p0 - model(xo).softmax(1)[0, 2]
                count[r:r + patch, c:c + patch] += 1
    torch.testing.assert_close(occ.drop, total / count, rtol=1e-4, atol=1e-6)


# --- Grad-CAM --------------------------------------------------------------------------------------------------

class TwoDetectors(SequentialNet):
    """Channel 0 detects vertical lines, channel 1 horizontal ones; class k's logit is channel k's mean.
    With in-place ReLUs, as torchvision's nets have."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = 2, 1, (16, 16)
        conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        line = torch.tensor([[-1.0, 2.0, -1.0]] * 3)
        conv.weight.data = torch.stack([line, line.T])[:, None]
        mix = nn.Conv2d(2, 2, 1, bias=False)
        mix.weight.data = torch.eye(2)[:, :, None, None]
        self.features = nn.Sequential(conv, nn.ReLU(inplace=True), nn.MaxPool2d(2), mix, nn.ReLU(inplace=True),
                                      nn.MaxPool2d(2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        fc = nn.Linear(2, 2)
        fc.weight.data, fc.bias.data = torch.eye(2), torch.zeros(2)
        self.classifier = nn.Sequential(fc)
        self.classifier_name = "classifier.0"


def _two_region_image() -> torch.Tensor:
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 1:7, 3] = 1.0  # a vertical line, top left: decides class 0
    x[0, 0, 12, 9:15] = 1.0  # a horizontal line, bottom right: decides class 1
    return x


def _cam_oracle(model, x, layer, target, inplace_free) -> torch.Tensor:
    """Selvaraju et al.'s formula by hand: α_k = mean of ∂y/∂A_k, ReLU(Σ_k α_k A_k), on a copy of the model
    without in-place ReLUs."""
    for m in inplace_free.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    kept = []
    h = dict(inplace_free.named_modules())[layer].register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        y = inplace_free(x)[0, target]
    finally:
        h.remove()
    (a,) = kept
    (grad,) = torch.autograd.grad(y, a)
    return F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1))[0].detach()


@pytest.mark.parametrize("target, rows, cols", [(0, slice(0, 8), slice(0, 8)), (1, slice(8, 16), slice(8, 16))])
def test_grad_cam_peaks_on_the_region_that_decides_the_class(target, rows, cols):
    import copy

    model = TwoDetectors().eval()
    x = _two_region_image()
    assert int(model(x).argmax(1)) in (0, 1)
    layer, note = default_cam_layer(model, (1, 16, 16))
    assert layer.module is model.get_stage("stage1").output and note == ""  # the last stage before the head
    gc_ = grad_cam(model, x, layer.module, target)
    assert gc_.cam.shape == (4, 4) and gc_.upsampled.shape == (16, 16)
    i, j = divmod(int(gc_.upsampled.argmax()), 16)
    assert rows.start <= i < rows.stop and cols.start <= j < cols.stop
    assert gc_.upsampled[rows, cols].sum() > 0.7 * gc_.upsampled.sum()  # most of the heat is on the region
    quadrant = (slice(rows.start // 4, rows.stop // 4), slice(cols.start // 4, cols.stop // 4))  # on the 4x4 map
    outside = gc_.cam.clone()
    outside[quadrant] = 0
    assert outside.max() < 0.2 * gc_.cam.max()  # (the other line's ends excite this detector a little)
    torch.testing.assert_close(gc_.cam, _cam_oracle(model, x, "features.5", target, copy.deepcopy(model)))


def test_grad_cam_at_a_conv_followed_by_an_in_place_relu_equals_the_formula():
    import copy

    model = TwoDetectors().eval()
    x = _two_region_image() + 0.1 * torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    gc_ = grad_cam(model, x, model.features[0], 1)  # features.1 is ReLU(inplace=True) on this conv's output
    torch.testing.assert_close(gc_.cam, _cam_oracle(model, x, "features.0", 1, copy.deepcopy(model)))
    assert model.features[1].inplace


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in model.modules())


def _tensors() -> int:
    import warnings

    gc.collect()
    with warnings.catch_warnings():  # isinstance on torch's deprecated module-level aliases warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_repeated_calls_leave_no_hooks_and_grow_nothing():
    model = TwoDetectors().eval()
    x = _two_region_image()
    imgs = (x * 255).to(torch.uint8)
    results, counts = [], []
    for _ in range(6):
        results.append(grad_cam(model, x, model.get_stage("stage1").output, 0).cam.numpy().copy())
        occlusion_map(model, x, 0, torch.zeros_like(x), 4, 4)
        activation_maps(model, x, [resolve_layer(model, "stem")])
        top_patches(model, resolve_layer(model, "stem"), [x], imgs, units=2, top=1)
        default_cam_layer(model, (1, 16, 16))
        assert _hooks(model) == 0
        counts.append(_tensors())
    assert all(np.array_equal(r, results[0]) for r in results)
    assert counts[-1] <= counts[2], counts  # no tensors pile up from call to call


def test_default_layer_is_the_last_stage_for_every_family():
    cases = {"resnet18": (3, 64, 64), "vgg11": (3, 64, 64), "mobilenet_v1": (3, 64, 64), "googlenet": (3, 96, 96),
             "alexnet": (3, 227, 227), "lenet1": (1, 28, 28)}
    for name, size in cases.items():
        model = build_model(name, num_classes=4, in_channels=size[0], input_size=size[1:])
        layer, note = default_cam_layer(model, size)
        last = [n for n in model.stage_names if n != "head"][-1]
        assert layer.name == last and layer.module is model.get_stage(last).output and note == "", name
    lenet5 = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32))
    layer, note = default_cam_layer(lenet5, (1, 32, 32))
    assert layer.name == "stage1" and "1x1" in note  # C5's maps are 1x1: the 5x5 stage before it is used


def test_grad_cam_runs_on_a_resnet_with_in_place_relus():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=3, in_channels=3, input_size=(32, 32)).eval()
    x = torch.randn(1, 3, 32, 32)
    layer, note = default_cam_layer(model, (3, 32, 32))  # 32x32 through the ImageNet stem: layer4 is 1x1
    assert layer.name == "stage3" and "stage4" in note
    out = grad_cam(model, x, layer.module, 1)
    assert out.cam.shape == (2, 2) and torch.isfinite(out.upsampled).all() and _hooks(model) == 0


# --- saliency and integrated gradients ---------------------------------------------------------------------

def test_saliency_is_the_absolute_input_gradient_and_ig_is_complete():
    torch.manual_seed(0)
    model = build_model("conv3-4p1 > tanh > maxpool2 > fc3", in_channels=3, input_size=(8, 8)).eval()
    nn.init.normal_(model.features[0].bias)  # a bias makes the score curve along the path (else IG is exact anyway)
    x = torch.randn(1, 3, 8, 8)
    xg = x.clone().requires_grad_(True)
    model(xg)[0, 2].backward()
    sal = saliency_map(model, x, 2)
    torch.testing.assert_close(sal.map, xg.grad[0].abs().amax(0))
    base = torch.zeros_like(x)
    ig = integrated_gradients(model, x, 2, base, steps=64)
    with torch.no_grad():
        gap = float(model(x)[0, 2] - model(base)[0, 2])
    assert float(ig.map.sum()) == pytest.approx(gap, rel=0.02, abs=1e-3)  # Sundararajan et al.'s completeness
    alphas = (torch.arange(400) + 0.5) / 400  # the path integral by hand: a midpoint sum of autograd gradients
    path = (base + alphas.view(-1, 1, 1, 1) * (x - base)).requires_grad_(True)
    model(path)[:, 2].sum().backward()
    by_hand = ((x - base)[0] * path.grad.mean(0)).sum(0)
    torch.testing.assert_close(ig.map, by_hand, rtol=1e-3, atol=1e-3 * float(by_hand.abs().max()))


def test_grad_cam_is_placed_where_its_units_look():
    from cnnlab.analysis import receptive_field as rfm
    from cnnlab.viz.attribution import place_on_input

    cam = torch.zeros(5, 5)
    cam[1, 3] = 1.0
    # LeNet-5's S4 (stage1) on 32x32: field 16, jump 4, centre 7.5 (unpadded convs): unit (1, 3) looks at
    # rows 4-19 and columns 12-27, centred on (11.5, 19.5).
    field = rfm.ReceptiveField((16, 16), (4, 4), (7.5, 7.5))
    placed = place_on_input(cam, field, (32, 32))
    peak = torch.nonzero(placed == placed.max())
    assert peak[:, 0].float().mean() == 11.5 and peak[:, 1].float().mean() == 19.5
    assert placed[:4].max() < 0.01 and placed[:, 28:].max() == 0  # nothing outside where the unit looks
    stretched = F.interpolate(cam[None, None], (32, 32), mode="bilinear")[0, 0]
    assert torch.nonzero(stretched == stretched.max())[:, 1].float().mean() > 21  # stretching shifts it outward
    # With "same" padding the two agree: field centres at (jump - 1)/2 + i*jump, jump = 32 / 4.
    same = rfm.ReceptiveField((20, 20), (8, 8), (3.5, 3.5))
    small = torch.rand(4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(place_on_input(small, same, (32, 32)),
                               F.interpolate(small[None, None], (32, 32), mode="bilinear")[0, 0])


def test_grad_cam_of_lenet5_uses_the_field_placement():
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32)).eval()
    layer, _ = default_cam_layer(model, (1, 32, 32))
    out = grad_cam(model, torch.randn(1, 1, 32, 32), layer.module, 4)
    assert out.placed_by_field and out.cam.shape == (5, 5)
    from cnnlab.analysis import receptive_field as rfm
    from cnnlab.viz.attribution import place_on_input

    lectures = rfm.ReceptiveField((16, 16), (4, 4), (7.5, 7.5))  # conv5, pool2, conv5, pool2 from pixel 0
    torch.testing.assert_close(out.upsampled, place_on_input(out.cam, lectures, (32, 32)))


def test_colour_top_patches_crop_every_channel_and_draw_outside_as_transparent():
    from cnnlab.viz.top_patches import draw_top_patches

    torch.manual_seed(0)
    model = build_model("conv3-4p1 > tanh > avgpool2 > fc3", in_channels=3, input_size=(8, 8)).eval()
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (11, 3, 8, 8), dtype=torch.uint8, generator=g)
    x = images.float() / 255
    tp = top_patches(model, resolve_layer(model, "stem"), [x[:6], x[6:]], images, units=2, top=3)
    assert tp.patches.shape == (2, 3, 3, 4, 4)
    for u in range(2):
        for r in range(3):
            n = int(tp.images[u, r])
            i, j = tp.positions[u, r].tolist()
            xi = x[n:n + 1].clone().requires_grad_(True)
            (a,), _ = capture_grad(model, model.features[2], xi)
            a[0, u, i, j].backward()
            rows, cols = np.nonzero(xi.grad[0].abs().sum(0).numpy() > 0)
            inside = tp.inside[u, r].numpy()
            for ch in range(3):
                np.testing.assert_array_equal(tp.patches[u, r, ch].numpy()[inside],
                                              _crop(images[n, ch].numpy(), rows, cols))
    fig = draw_top_patches(tp)
    (im,) = fig.axes[0].get_images()
    grid = im.get_array()
    assert grid.shape[-1] == 4 and len(_tiles(np.asarray(grid))) == 6  # RGBA, transparent where not in an image
