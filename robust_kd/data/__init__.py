"""Data sets (a registry of loaders) and the tensor batch loader.

Importing this package registers every built-in data set.
"""

from . import cifar, cifar10_samples, idx, imagefolder, synthetic  # noqa: F401  (registration side effects)
from .dataset import ImageDataset, channel_stats
from .loader import Augment, Batch, BatchLoader
from .registry import DatasetEntry, dataset_entry, list_datasets, load_dataset, register_dataset

__all__ = [
    "Augment", "Batch", "BatchLoader", "DatasetEntry", "ImageDataset", "channel_stats", "dataset_entry",
    "list_datasets", "load_dataset", "register_dataset",
]
