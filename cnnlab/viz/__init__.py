"""Seeing inside a trained run: first-layer filters, feature maps, Zeiler & Fergus's top patches, occlusion,
Grad-CAM, saliency and training curves as PNGs (matplotlib, headless), and the run's self-contained HTML
report page. Attributions go through Captum; layers are chosen by the shared stage names; receptive fields
come from cnnlab's analysis. Heavy modules load on first use."""

from ..utils.lazy import lazy_exports

__all__ = ["filter_grid", "activation_maps", "top_patches", "occlusion_map", "grad_cam", "saliency_map",
           "integrated_gradients", "run_curves", "draw_curves", "build_report", "resolve_layer"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "filter_grid": ".filters:filter_grid", "activation_maps": ".activations:activation_maps",
    "top_patches": ".top_patches:top_patches", "occlusion_map": ".attribution:occlusion_map",
    "grad_cam": ".attribution:grad_cam", "saliency_map": ".attribution:saliency_map",
    "integrated_gradients": ".attribution:integrated_gradients", "run_curves": ".curves:run_curves",
    "draw_curves": ".curves:draw_curves", "build_report": ".report:build_report",
    "resolve_layer": ".layer_select:resolve_layer"})
