"""``python -m codex_as_api``: the ``codex-as-api`` command."""

import sys

from ._cli import main

sys.exit(main())
