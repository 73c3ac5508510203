"""Data: bundled digits, noise models, and readers for user-supplied datasets.

Nothing here downloads: MNIST (IDX) and fastMRI (HDF5) are read from files the
user provides; tests and demos use data that ships inside installed packages.
"""

from convexdual.data.digits import load_digits_dataset
from convexdual.data.noise import add_noise

__all__ = ["load_digits_dataset", "add_noise"]
