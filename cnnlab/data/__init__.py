"""Datasets: sources decoded once into uint8 tensors, seeded splits, a fast in-memory loader."""

from .dataset import Dataset, Split
from .loader import BatchLoader
from .sources import SOURCES, load_dataset

__all__ = ["BatchLoader", "Dataset", "SOURCES", "Split", "load_dataset"]
