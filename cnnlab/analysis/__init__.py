"""Architecture analysis: per-layer shapes, parameters, MACs/FLOPs, receptive fields and the lectures'
geometry checks for any model; side-by-side comparison; a hand-exercise convolution explainer."""

from .summary import SCHEMA_VERSION, LayerRow, Summary, summarize

__all__ = ["SCHEMA_VERSION", "LayerRow", "Summary", "summarize"]
