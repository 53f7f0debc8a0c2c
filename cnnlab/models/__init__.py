"""The model zoo: the lectures' architectures by name, or written in their layer notation."""

from . import zoo  # noqa: F401  (registers every family before any user registration can clash)
from .base import ConvNet
from .registry import ModelInfo, build_model, list_models, model_info, register_model

__all__ = ["ConvNet", "ModelInfo", "build_model", "list_models", "model_info", "register_model"]
