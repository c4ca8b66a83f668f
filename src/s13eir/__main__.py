"""``python -m s13eir``: the ``s13eir`` command, for when the console script is not on PATH."""

from __future__ import annotations

import sys

from s13eir.cli import main

if __name__ == "__main__":
    sys.exit(main())
