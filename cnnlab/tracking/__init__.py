"""Tracking: the runs index (one SQLite file in the runs root that lists every training run and experiment),
what training tells it, and the leaderboard queries over it.

Imported by cnnlab.train.run, so nothing here imports from above `train` (no experiments, eval or viz)."""

from ..utils.lazy import lazy_exports

__all__ = ["INDEX_NAME", "RunIndex", "RunRecorder", "import_runs"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "INDEX_NAME": ".index:INDEX_NAME", "RunIndex": ".index:RunIndex", "RunRecorder": ".record:RunRecorder",
    "import_runs": ".record:import_runs"})
