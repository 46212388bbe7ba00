"""``python -m simx``: the same command line as the ``simx`` console script."""

import sys

from .cli import main

sys.exit(main())
