"""The ``codex-as-api`` command, run in this process by the Rust CLI."""

from __future__ import annotations

import signal
import sys

from . import _native


def main(argv: list[str] | None = None) -> int:
    """Run ``codex-as-api`` with ``argv`` (default: the process's arguments); returns the
    exit status."""
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C belongs to the Rust side, as in the native binary: `serve` and `emulator` catch
    # it (and SIGTERM) to shut down cleanly; every other command dies of it. Python's own
    # handler would only set a flag that nothing reads while Rust runs, so a Ctrl-C outside
    # the Rust handlers (during `login`, say) would be ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    return _native.run_cli(["codex-as-api", *args])


if __name__ == "__main__":
    sys.exit(main())
