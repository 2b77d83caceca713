"""``python -m detkit COMMAND ...``: the same as the ``detkit`` console command."""

import sys

from detkit.cli import main

sys.exit(main())
