"""Datasets: sources decoded once into uint8 tensors, seeded splits, a fast in-memory loader, batched
augmentation."""

from .augment import build_augmentation, parse_spec
from .dataset import Dataset, Split
from .loader import BatchLoader
from .sources import SOURCES, load_dataset

__all__ = ["BatchLoader", "Dataset", "SOURCES", "Split", "build_augmentation", "load_dataset", "parse_spec"]
