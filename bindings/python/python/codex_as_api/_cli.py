"""The ``codex-as-api`` command, run in this process by the Rust CLI."""

from __future__ import annotations

import signal
import sys

from . import _native


def main(argv: list[str] | None = None) -> int:
    """Run ``codex-as-api`` with ``argv`` (default: the process's arguments); returns the
    exit status."""
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C and SIGTERM belong to the Rust side (it drains the server, then returns), as in
    # the native binary: with Python's SIGINT handler left in place, a KeyboardInterrupt
    # would be raised after the Rust side has already shut down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    return _native.run_cli(["codex-as-api", *args])


if __name__ == "__main__":
    sys.exit(main())
