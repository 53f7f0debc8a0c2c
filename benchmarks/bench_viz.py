"""What the viz commands cost, as ratios measured in one run (the machine is shared and noisy):

- occlusion: Captum's Occlusion (batched, `perturbations_per_eval`) against a hand-written batched version
  (all occluded images built with torch ops, forwarded in batches) and against one forward pass per square
  position in a Python loop — LeNet-5 on 1×32×32 (patch 8, stride 4) and ResNet-18 with the CIFAR stem on
  3×32×32 (patch 4, stride 2);
- Grad-CAM: cnnlab's grad_cam (Captum's LayerGradCam, plus one traced forward pass for the receptive-field
  placement) against bare hand-written hooks (forward hook + autograd.grad, stretched) on the same nets;
- top patches: the one-pass running top-k against keeping every activation and sorting at the end (time and
  the bytes each holds), LeNet-5's stage1 (S4: 16 maps of 5×5) over 4,000 random images;
- the report page of a LeNet-5 run on the digits (CPU seconds in this process, after training).

Usage: .venv/bin/python benchmarks/bench_viz.py [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnnlab.models import build_model  # noqa: E402
from cnnlab.utils.io import write_json_atomic  # noqa: E402
from cnnlab.viz.attribution import grad_cam, occlusion_map  # noqa: E402
from cnnlab.viz.layer_select import default_cam_layer, resolve_layer  # noqa: E402
from cnnlab.viz.top_patches import top_patches  # noqa: E402


def best_of(fn, rounds: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def occlusion_by_hand(model, x, target, grey, patch, stride, batch):
    """Every occluded image built at once with torch ops (masks from index arithmetic), forwarded in batches."""
    _, c, h, w = x.shape
    starts_h = torch.arange(0, max(h - patch, 0) + stride, stride)[: math.ceil((h - patch) / stride) + 1]
    starts_w = torch.arange(0, max(w - patch, 0) + stride, stride)[: math.ceil((w - patch) / stride) + 1]
    rows = torch.arange(h)
    cols = torch.arange(w)
    mh = (rows[None] >= starts_h[:, None]) & (rows[None] < starts_h[:, None] + patch)  # (Sh, H)
    mw = (cols[None] >= starts_w[:, None]) & (cols[None] < starts_w[:, None] + patch)  # (Sw, W)
    masks = (mh[:, None, :, None] & mw[None, :, None, :]).reshape(-1, 1, h, w).float()  # (S, 1, H, W)
    p0 = model(x).softmax(1)[0, target]
    drops = []
    for i in range(0, len(masks), batch):
        m = masks[i:i + batch]
        xo = x * (1 - m) + grey * m
        drops.append(p0 - model(xo).softmax(1)[:, target])
    d = torch.cat(drops)
    return (d[:, None, None] * masks[:, 0]).sum(0) / masks[:, 0].sum(0).clamp_min(1)


@torch.no_grad()
def occlusion_loop(model, x, target, grey, patch, stride):
    """One forward pass per square position (what the issue asks not to do)."""
    _, _, h, w = x.shape
    p0 = model(x).softmax(1)[0, target]
    total, count = torch.zeros(h, w), torch.zeros(h, w)
    for r in range(0, math.ceil((h - patch) / stride) * stride + 1, stride):
        for c in range(0, math.ceil((w - patch) / stride) * stride + 1, stride):
            xo = x.clone()
            xo[..., r:r + patch, c:c + patch] = grey
            total[r:r + patch, c:c + patch] += p0 - model(xo).softmax(1)[0, target]
            count[r:r + patch, c:c + patch] += 1
    return total / count.clamp_min(1)


def grad_cam_by_hand(model, x, layer, target):
    kept = []
    h = layer.register_forward_hook(lambda m, i, o: kept.append(o))
    try:
        y = model(x)[0, target]
    finally:
        h.remove()
    (a,) = kept
    (g,) = torch.autograd.grad(y, a)
    return F.relu((g.mean((2, 3), keepdim=True) * a).sum(1))[0]


def bench_attributions(rounds: int) -> list[dict]:
    rows = []
    for name, shape, patch, stride, opts in (("lenet5", (1, 32, 32), 8, 4, {}),
                                             ("resnet18", (3, 32, 32), 4, 2, {"stem": "cifar"})):
        torch.manual_seed(0)
        model = build_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1:], **opts).eval()
        for m in model.modules():  # the hand-written Grad-CAM below reads the layer's output after the fact
            if isinstance(m, torch.nn.ReLU):
                m.inplace = False
        x = torch.randn(1, *shape)
        base = torch.full_like(x, 0.5)
        captum = occlusion_map(model, x, 3, base, patch, stride, batch_size=64).drop
        hand = occlusion_by_hand(model, x, 3, 0.5, patch, stride, 64)
        loop = occlusion_loop(model, x, 3, 0.5, patch, stride)
        assert torch.allclose(captum, hand, atol=1e-5) and torch.allclose(captum, loop, atol=1e-5)
        t_captum = best_of(lambda: occlusion_map(model, x, 3, base, patch, stride, batch_size=64), rounds)
        t_hand = best_of(lambda: occlusion_by_hand(model, x, 3, 0.5, patch, stride, 64), rounds)
        t_loop = best_of(lambda: occlusion_loop(model, x, 3, 0.5, patch, stride), rounds)
        layer, _ = default_cam_layer(model, shape)
        cam = grad_cam(model, x, layer.module, 3).cam
        assert torch.allclose(cam, grad_cam_by_hand(model, x, layer.module, 3), atol=1e-5)
        t_cam = best_of(lambda: grad_cam(model, x, layer.module, 3), rounds)
        t_cam_hand = best_of(lambda: grad_cam_by_hand(model, x, layer.module, 3), rounds)
        positions = (math.ceil((shape[1] - patch) / stride) + 1) ** 2
        rows.append({"model": name, "input": "x".join(map(str, shape)), "positions": positions,
                     "occlusion_captum_ms": t_captum * 1e3, "occlusion_hand_batched_ms": t_hand * 1e3,
                     "occlusion_loop_ms": t_loop * 1e3, "gradcam_captum_ms": t_cam * 1e3,
                     "gradcam_hand_ms": t_cam_hand * 1e3})
    return rows


def bench_top_patches(rounds: int) -> dict:
    torch.manual_seed(0)
    model = build_model("lenet5", num_classes=10, in_channels=1, input_size=(32, 32)).eval()
    images = torch.randint(0, 256, (4000, 1, 32, 32), dtype=torch.uint8)
    x = (images.float() / 255 - 0.3) / 0.3
    batches = [x[i:i + 256] for i in range(0, len(x), 256)]
    layer = resolve_layer(model, "stage1")

    def running():
        return top_patches(model, layer, batches, images, units=16, top=9)

    def store_all():
        kept = []
        h = layer.module.register_forward_hook(lambda m, i, o: kept.append(o.detach().clone()))
        try:
            with torch.no_grad():
                for b in batches:
                    model(b)
        finally:
            h.remove()
        acts = torch.cat(kept)  # (N, 16, 5, 5)
        per_image, _ = acts.flatten(2).max(2)
        return per_image.topk(9, dim=0), acts.numel() * acts.element_size()

    tp = running()
    (values, index), held = store_all()
    assert torch.equal(tp.images, index.T) and torch.allclose(tp.values, values.T)
    return {"images": len(images), "running_topk_ms": best_of(running, rounds) * 1e3,
            "store_all_ms": best_of(store_all, rounds) * 1e3, "store_all_bytes": held,
            "running_topk_bytes": tp.values.numel() * 4 + tp.images.numel() * 8 * 2}


def bench_report() -> dict:
    from cnnlab.eval.report import evaluate_run
    from cnnlab.train import train
    from cnnlab.viz.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        train(epochs=2, quiet=True, limit_per_class=40, out=f"{tmp}/run")
        t, c = time.perf_counter(), time.process_time()
        path = build_report(f"{tmp}/run", evaluate=evaluate_run)  # the page `cnnlab train` writes
        return {"report_wall_s": time.perf_counter() - t, "report_cpu_s": time.process_time() - c,
                "report_kib": path.stat().st_size / 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="save the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = bench_attributions(args.rounds)
    print(f"{'model':<9} {'input':<8} {'squares':>7} {'Captum occl.':>12} {'by hand':>9} {'loop':>9} "
          f"{'loop/Captum':>11} {'cnnlab Grad-CAM':>15} {'bare hooks':>10}")
    for r in rows:
        print(f"{r['model']:<9} {r['input']:<8} {r['positions']:>7} {r['occlusion_captum_ms']:>10.1f}ms "
              f"{r['occlusion_hand_batched_ms']:>7.1f}ms {r['occlusion_loop_ms']:>7.1f}ms "
              f"{r['occlusion_loop_ms'] / r['occlusion_captum_ms']:>10.1f}x {r['gradcam_captum_ms']:>13.1f}ms "
              f"{r['gradcam_hand_ms']:>8.1f}ms")
    tp = bench_top_patches(args.rounds)
    print(f"top patches over {tp['images']} images: running top-k {tp['running_topk_ms']:.0f} ms holding "
          f"{tp['running_topk_bytes']:,} B; keeping every activation {tp['store_all_ms']:.0f} ms holding "
          f"{tp['store_all_bytes']:,} B")
    rep = bench_report()
    print(f"report page of a LeNet-5 digits run: {rep['report_cpu_s']:.2f} s CPU ({rep['report_wall_s']:.2f} s wall), "
          f"{rep['report_kib']:.0f} KiB")
    if args.json:
        write_json_atomic(args.json, {"attributions": rows, "top_patches": tp, "report": rep})
    return 0


if __name__ == "__main__":
    sys.exit(main())
