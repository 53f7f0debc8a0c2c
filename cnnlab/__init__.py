"""cnnlab: the convolutional networks of the lectures as working tools — build, analyse, train,
evaluate, transfer and look inside them, on PyTorch."""

from .errors import CnnlabError
from .utils.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["CnnlabError", "Run", "build_model", "evaluate", "list_models", "load_run", "register_model",
           "summarize", "train_model", "__version__"]

# `cnnlab.train` is the training package; its function is exported here as `train_model`.
__getattr__, __dir__ = lazy_exports(__name__, {
    "build_model": ".models:build_model", "list_models": ".models:list_models",
    "register_model": ".models:register_model", "summarize": ".analysis:summarize",
    "train_model": ".train:train", "evaluate": ".train:evaluate", "load_run": ".runs:load_run",
    "Run": ".runs:Run"})
