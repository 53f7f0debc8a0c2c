"""State-dict layouts (key names and shapes) of torchvision's ResNet, VGG and GoogLeNet, written out from
torchvision's published model code (torchvision/models/resnet.py, vgg.py, googlenet.py) and the papers'
tables — an outside reference, independent of cnnlab's model classes — to generate weight files "in
torchvision format" without torchvision."""

from __future__ import annotations

import torch


def _bn(prefix: str, c: int, eps_unused: float = 1e-5) -> dict:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def resnet_layout(blocks=(2, 2, 2, 2), bottleneck: bool = False, num_classes: int = 1000) -> dict:
    """torchvision.models.resnet.ResNet(BasicBlock | Bottleneck, blocks): conv1 7x7, bn1, layer1-4, fc."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    expansion = 4 if bottleneck else 1
    inplanes = 64
    for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
        for j in range(n):
            p = f"layer{i}.{j}"
            stride = 2 if (i > 1 and j == 0) else 1
            if bottleneck:
                shapes.update({f"{p}.conv1.weight": (planes, inplanes, 1, 1), **_bn(f"{p}.bn1", planes),
                               f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes),
                               f"{p}.conv3.weight": (planes * 4, planes, 1, 1), **_bn(f"{p}.bn3", planes * 4)})
            else:
                shapes.update({f"{p}.conv1.weight": (planes, inplanes, 3, 3), **_bn(f"{p}.bn1", planes),
                               f"{p}.conv2.weight": (planes, planes, 3, 3), **_bn(f"{p}.bn2", planes)})
            if j == 0 and (stride != 1 or inplanes != planes * expansion):
                shapes.update({f"{p}.downsample.0.weight": (planes * expansion, inplanes, 1, 1),
                               **_bn(f"{p}.downsample.1", planes * expansion)})
            inplanes = planes * expansion
    shapes.update({"fc.weight": (num_classes, 512 * expansion), "fc.bias": (num_classes,)})
    return shapes


VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg_layout(cfg=VGG_D, batch_norm: bool = False, num_classes: int = 1000) -> dict:
    """torchvision.models.vgg: features (conv[, bn], relu; 'M' max-pool), classifier.0/3/6 after a 7x7 pool."""
    shapes, i, c = {}, 0, 3
    for v in cfg:
        if v == "M":
            i += 1
            continue
        shapes.update({f"features.{i}.weight": (v, c, 3, 3), f"features.{i}.bias": (v,)})
        if batch_norm:
            shapes.update(_bn(f"features.{i + 1}", v))
        i += 3 if batch_norm else 2
        c = v
    shapes.update({"classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
                   "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                   "classifier.6.weight": (num_classes, 4096), "classifier.6.bias": (num_classes,)})
    return shapes


# GoogLeNet (Szegedy et al. 2014, Table 1): name, in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = [("inception3a", 192, 64, 96, 128, 16, 32, 32), ("inception3b", 256, 128, 128, 192, 32, 96, 64),
             ("inception4a", 480, 192, 96, 208, 16, 48, 64), ("inception4b", 512, 160, 112, 224, 24, 64, 64),
             ("inception4c", 512, 128, 128, 256, 24, 64, 64), ("inception4d", 512, 112, 144, 288, 32, 64, 64),
             ("inception4e", 528, 256, 160, 320, 32, 128, 128), ("inception5a", 832, 256, 160, 320, 32, 128, 128),
             ("inception5b", 832, 384, 192, 384, 48, 128, 128)]


def googlenet_layout(num_classes: int = 1000) -> dict:
    """torchvision.models.googlenet.GoogLeNet: BasicConv2d = conv (no bias) + bn; torchvision's "5x5" branch
    is a 3x3 conv; aux heads aux1 (after 4a, 512 ch) and aux2 (after 4d, 528 ch) are in the file."""
    def basic(p, cin, cout, k):
        return {f"{p}.conv.weight": (cout, cin, k, k), **_bn(f"{p}.bn", cout)}

    shapes = {**basic("conv1", 3, 64, 7), **basic("conv2", 64, 64, 1), **basic("conv3", 64, 192, 3)}
    for name, cin, c1, c3r, c3, c5r, c5, pp in INCEPTION:
        shapes.update({**basic(f"{name}.branch1", cin, c1, 1), **basic(f"{name}.branch2.0", cin, c3r, 1),
                       **basic(f"{name}.branch2.1", c3r, c3, 3), **basic(f"{name}.branch3.0", cin, c5r, 1),
                       **basic(f"{name}.branch3.1", c5r, c5, 3), **basic(f"{name}.branch4.1", cin, pp, 1)})
    for aux, cin in (("aux1", 512), ("aux2", 528)):
        shapes.update({**basic(f"{aux}.conv", cin, 128, 1), f"{aux}.fc1.weight": (1024, 2048),
                       f"{aux}.fc1.bias": (1024,), f"{aux}.fc2.weight": (num_classes, 1024),
                       f"{aux}.fc2.bias": (num_classes,)})
    shapes.update({"fc.weight": (num_classes, 1024), "fc.bias": (num_classes,)})
    return shapes


def random_state(layout: dict, seed: int = 0, constant: bool = False) -> dict:
    """Tensors of the layout's shapes: random floats (positive running_var), int64 step counters. With
    `constant`, each tensor is filled with its own index instead (fast for VGG's 138M values, and still
    tells every tensor apart)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for i, (key, shape) in enumerate(layout.items()):
        if constant:
            out[key] = torch.full(shape, float(i + 1))
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            out[key] = torch.randn(shape, generator=gen) * 0.05
    return out
