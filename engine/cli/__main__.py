"""``python -m engine.cli``: the ``radbridge`` command without the console script."""

import sys

from engine.cli.commands import entry

sys.exit(entry())
