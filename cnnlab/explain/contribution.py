"""How much each input pixel contributes to a layer: the number of that layer's output units whose
receptive field contains the pixel (the lecture's LeNet table "pixels on the border contribute less",
generalised to 2-D).

A unit's field is a rectangle, size r, centred at c + k·j along each axis (the analysis's size, jump and
centre; see cnnlab.analysis.receptive_field), so the 2-D count is the outer product of two per-axis
counts. Pixels in the zero padding are not counted; units whose field hangs over the border still count
for the pixels they do see.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError


def axis_counts(n_in: int, n_out: int, size: float, jump: float, centre: float) -> torch.Tensor:
    """For each of the `n_in` input positions along one axis, how many of the `n_out` units' fields
    (size `size`, unit k centred at `centre + k * jump`) contain it. int64 tensor of length n_in."""
    if n_in < 1 or n_out < 1 or size < 1 or jump <= 0:
        raise ConfigError(f"receptive field counts need positive sizes, got input {n_in}, output {n_out}, "
                          f"field {size}, jump {jump}")
    # Unit k contains pixel p when |p - (centre + k*jump)| <= half: k runs over an interval, counted in closed
    # form per pixel (memory O(n_in), where comparing every unit with every pixel took n_in * n_out).
    pixels = torch.arange(n_in, dtype=torch.float64)
    half = (size - 1) / 2 + 1e-9
    lo = torch.ceil((pixels - centre - half) / jump).clamp(min=0)
    hi = torch.floor((pixels - centre + half) / jump).clamp(max=n_out - 1)
    return (hi - lo + 1).clamp(min=0).to(torch.int64)


def contribution_map(input_hw: tuple[int, int], output_hw: tuple[int, int], field: dict) -> torch.Tensor:
    """The (H, W) count map of one layer from its receptive-field dict (as in the analysis's JSON:
    size, jump and centre as [h, w])."""
    if field.get("global") or field.get("unknown") or field.get("size") is None:
        raise ConfigError("this layer has no spatial receptive field (global or unknown)")
    rows = axis_counts(input_hw[0], output_hw[0], field["size"][0], field["jump"][0], field["centre"][0])
    cols = axis_counts(input_hw[1], output_hw[1], field["size"][1], field["jump"][1], field["centre"][1])
    return rows[:, None] * cols[None, :]
