"""``python -m skcl``: the skcl command line."""

import sys

from skcl.cli import main

sys.exit(main())
