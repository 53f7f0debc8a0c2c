"""Datasets: sources decoded once into uint8 tensors, seeded splits, a fast in-memory loader, batched
augmentation."""

from ..utils.lazy import lazy_exports

__all__ = ["BatchLoader", "Dataset", "SOURCES", "Split", "build_augmentation", "load_dataset", "parse_spec"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "build_augmentation": ".augment:build_augmentation", "parse_spec": ".augment_spec:parse_spec",
    "Dataset": ".dataset:Dataset", "Split": ".dataset:Split", "BatchLoader": ".loader:BatchLoader",
    "SOURCES": ".sources:SOURCES", "load_dataset": ".sources:load_dataset"})
