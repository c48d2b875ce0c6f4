"""The ``codex-as-api`` command, run in this process by the Rust CLI."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from . import _native

# `codex-as-api claude` starts the server as a program of its own: the Rust side runs this
# one again when it is named here (its own executable is the Python interpreter).
SELF_EXE = "CODEX_AS_API_EXE"


def self_exe() -> str | None:
    """The ``codex-as-api`` program of this environment, or None when there is none."""
    script = Path(sys.executable).parent / "codex-as-api"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script)
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "codex-as-api" and os.access(argv0, os.X_OK):
        return str(argv0.resolve())
    return None


def main(argv: list[str] | None = None) -> int:
    """Run ``codex-as-api`` with ``argv`` (default: the process's arguments); returns the
    exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not os.environ.get(SELF_EXE):
        exe = self_exe()
        if exe is not None:
            os.environ[SELF_EXE] = exe
    # Ctrl-C belongs to the Rust side, as in the native binary: `serve` and `emulator` catch
    # it (and SIGTERM) to shut down cleanly; every other command dies of it. Python's own
    # handler would only set a flag that nothing reads while Rust runs, so a Ctrl-C outside
    # the Rust handlers (during `login`, say) would be ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    return _native.run_cli(["codex-as-api", *args])


if __name__ == "__main__":
    sys.exit(main())
