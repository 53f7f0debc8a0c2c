"""Architecture analysis: per-layer shapes, parameters, MACs/FLOPs, receptive fields and the lectures'
geometry checks for any model; side-by-side comparison; a hand-exercise convolution explainer."""

from ..utils.lazy import lazy_exports

__all__ = ["SCHEMA_VERSION", "LayerRow", "Summary", "summarize"]

__getattr__, __dir__ = lazy_exports(__name__, {
    name: f".summary:{name}" for name in ("SCHEMA_VERSION", "LayerRow", "Summary", "summarize")})
