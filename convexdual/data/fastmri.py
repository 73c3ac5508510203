"""Moved: the fastMRI HDF5 reader/writer is :mod:`convexdual.mri.fastmri` (issue 13).

A compatibility shim: 0.1.0's docs named ``convexdual.data.fastmri``, so user scripts may import
it. It only re-exports the public names (with a DeprecationWarning); new code imports
``convexdual.mri.fastmri``. Nothing inside convexdual imports this module
(tests/test_package_layout.py), so it adds no data/ -> mri/ dependency of the package's own.
"""

import warnings

from convexdual.mri.fastmri import *  # noqa: F401,F403
from convexdual.mri.fastmri import __all__  # noqa: F401

warnings.warn("convexdual.data.fastmri moved to convexdual.mri.fastmri", DeprecationWarning, stacklevel=2)
