"""Transfer learning: start from trained weights (a run, a file, a URL or published ImageNet weights), freeze
stages, fine-tune with per-stage learning rates, extract features for linear probes, and reproduce the
experiment of Yosinski et al. (2014) on how transferable each stage is.

Layering: `weights` and `freeze` are the low-level pieces cnnlab.train uses (they import nothing above it);
`features`, `probe` and `study` sit above train and runs. Names load on first use (no torch at import).
"""

from ..utils.lazy import lazy_exports

__all__ = ["CATALOGUE", "FeatureSet", "ProbeResult", "StageFreezer", "StudyResult", "extract_features",
           "fit_probe", "load_features", "load_into", "read_state_dict", "transfer_study"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "CATALOGUE": ".catalogue:CATALOGUE", "StageFreezer": ".freeze:StageFreezer",
    "load_into": ".weights:load_into", "read_state_dict": ".weights:read_state_dict",
    "FeatureSet": ".features:FeatureSet", "extract_features": ".features:extract_features",
    "load_features": ".features:load_features", "ProbeResult": ".probe:ProbeResult", "fit_probe": ".probe:fit_probe",
    "StudyResult": ".study:StudyResult", "transfer_study": ".study:transfer_study"})
