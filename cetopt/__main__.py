"""``python -m cetopt`` (what ``torchrun ... -m cetopt extract ...`` runs): the ``cetopt`` command."""

import sys

from cetopt.cli import entry

sys.exit(entry())
