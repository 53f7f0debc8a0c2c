"""cnnlab: the convolutional networks of the lectures as working tools — build, analyse, train,
evaluate, transfer and look inside them, on PyTorch."""

from .errors import CnnlabError
from .utils.lazy import lazy_exports

__version__ = "0.1.0"
__all__ = ["CnnlabError", "build_model", "list_models", "register_model", "summarize", "train", "__version__"]

# The package cnnlab.train is callable: cnnlab.train(config) trains.
__getattr__, __dir__ = lazy_exports(__name__, {
    "build_model": ".models:build_model", "list_models": ".models:list_models",
    "register_model": ".models:register_model", "summarize": ".analysis:summarize", "train": ".train"})
