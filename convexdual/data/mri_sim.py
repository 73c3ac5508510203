"""Moved: the offline MRI simulator is :mod:`convexdual.mri.simulate` (issue 13).

A compatibility shim: 0.1.0's docs named ``convexdual.data.mri_sim``, so user scripts may import
it. It only re-exports the public names (with a DeprecationWarning); new code imports
``convexdual.mri.simulate``. Nothing inside convexdual imports this module
(tests/test_package_layout.py), so it adds no data/ -> mri/ dependency of the package's own.
"""

import warnings

from convexdual.mri.simulate import *  # noqa: F401,F403
from convexdual.mri.simulate import __all__  # noqa: F401

warnings.warn("convexdual.data.mri_sim moved to convexdual.mri.simulate", DeprecationWarning, stacklevel=2)
