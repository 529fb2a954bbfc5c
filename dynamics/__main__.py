"""``python -m dynamics``: the same command line as ``dynamics``."""

import sys

from dynamics.cli import main

if __name__ == "__main__":  # guarded so that importing this module (e.g. doctest collection) runs nothing
    sys.exit(main())
