"""``python -m cetopt.cli``."""

import sys

from cetopt.cli import main

sys.exit(main())
