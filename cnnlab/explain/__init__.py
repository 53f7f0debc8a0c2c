"""Interactive explainer pages: self-contained HTML files (inline CSS and JavaScript, data embedded as
JSON, nothing fetched) that animate what cnnlab computes: a convolution step by step (`conv_page`), a
model's data-flow graph with receptive fields and pixel contributions (`model_page`), and a trained run's
feature maps and probabilities for one image (`run_page`)."""

from ..utils.lazy import lazy_exports

__all__ = ["conv_page", "model_page", "run_page", "write_page", "contribution_map", "axis_counts"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "conv_page": ".conv_page:conv_page", "model_page": ".model_page:model_page",
    "run_page": ".run_page:run_page", "write_page": ".page:write_page",
    "contribution_map": ".contribution:contribution_map", "axis_counts": ".contribution:axis_counts"})
