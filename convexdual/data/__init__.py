"""Data: bundled digits, noise models, and readers for user-supplied datasets.

Nothing here downloads: MNIST (IDX) and ``.npz``/``.npy`` pairs are read from files the
user provides; tests and demos use data that ships inside installed packages. The
fastMRI reader/writer and the MRI simulator live with the MRI pipeline in
:mod:`convexdual.mri` (``mri.fastmri``, ``mri.simulate``).
"""

from convexdual.data.digits import load_digits_dataset
from convexdual.data.noise import add_noise

__all__ = ["load_digits_dataset", "add_noise"]
