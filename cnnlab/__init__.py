"""cnnlab: the convolutional networks of the lectures as working tools — build, analyse, train,
evaluate, transfer and look inside them, on PyTorch."""

from .errors import CnnlabError
from .models import build_model, list_models, register_model
from . import train  # the package is callable: cnnlab.train(config) trains (torch-free until called)
from .analysis import summarize

__version__ = "0.1.0"
__all__ = ["CnnlabError", "build_model", "list_models", "register_model", "summarize", "train", "__version__"]
