"""``python -m codedml``: see :mod:`codedml.cli`."""

import sys

from .cli import main

sys.exit(main())
