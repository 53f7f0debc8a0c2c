"""How much memory a model would take, found on PyTorch's meta device (shapes only, nothing allocated), so
that a width that would need terabytes is refused with its size instead of failing inside the allocator."""

from __future__ import annotations

from torch import nn

from ..layers import meta_device
from ..utils.limits import check_memory, short_text


def build_on_meta(name: str, **kwargs) -> nn.Module:
    """`build_model(name, **kwargs)` on the meta device (geometry checked, no weights allocated)."""
    from .registry import build_model

    with meta_device():
        return build_model(name, **kwargs)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers (what its state dict holds)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def activation_elements(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Elements of every leaf module's output for one image (what a training step keeps for backward), from
    a forward pass on the meta device; 0 when a layer cannot run on meta."""
    import torch

    total = 0

    def count(module, inputs, output):
        nonlocal total
        for out in (output if isinstance(output, (tuple, list)) else (output,)):
            if isinstance(out, torch.Tensor):
                total += out.numel()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty((2, *input_shape), device="meta"))  # 2: batch norm refuses one value per channel
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return 0
    finally:
        for h in handles:
            h.remove()
    return total // 2


def check_buildable(name: str, **kwargs) -> nn.Module | None:
    """The model built on meta; ResourceError (naming its size) if its weights alone would not fit in
    the machine's memory. Call before building it for real. None when a builder cannot run on meta (it
    computes with real tensors: none of its sizes comes from the user)."""
    try:
        model = build_on_meta(name, **kwargs)
    except (RuntimeError, NotImplementedError):
        return None
    check_memory(state_bytes(model), f"model {short_text(name)!r}'s weights")
    return model
