"""``python -m shuffle``: the same as the ``shuffle`` console script."""

import sys

from shuffle.cli import main

sys.exit(main())
