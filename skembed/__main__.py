"""``python -m skembed``: the skembed command line."""

import sys

from skembed.cli import main

sys.exit(main())
