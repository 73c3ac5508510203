"""``python -m convexdual ...`` (and ``torchrun ... -m convexdual solve ...``): the command line."""

import sys

from convexdual.cli import main

if __name__ == "__main__":
    sys.exit(main())
