"""``python -m tensorpng convert ...`` and ``python -m tensorpng info``: the command line."""

import sys

from .cli import main

sys.exit(main())
