"""Fixtures: the INSTALLED package's `codex-as-api emulator` on a loopback port, and a
Codex home of our own (so no real login or config.toml is read)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


def cli() -> str:
    """The `codex-as-api` script of the environment running the tests."""
    path = Path(sys.executable).parent / "codex-as-api"
    assert path.exists(), f"{path} is missing: is the wheel installed in this venv?"
    return str(path)


@dataclass(frozen=True)
class Emulator:
    upstream_url: str
    token_url: str
    auth_json: Path


@pytest.fixture(scope="session")
def codex_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("codex-home")
    os.environ["CODEX_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def emulator(codex_home: Path, tmp_path_factory: pytest.TempPathFactory):
    auth = tmp_path_factory.mktemp("emu") / "auth.json"
    proc = subprocess.Popen(
        [cli(), "emulator", "--port", "0", "--auth-out", str(auth)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        urls: dict[str, str] = {}
        assert proc.stdout is not None
        while len(urls) < 2:
            line = proc.stdout.readline()
            assert line, f"the emulator exited ({proc.wait()}) before printing its URLs"
            key, _, value = line.strip().partition("=")
            urls[key] = value
        emu = Emulator(
            upstream_url=urls["CODEX_AS_API_UPSTREAM_URL"],
            token_url=urls["CODEX_AS_API_TOKEN_URL"],
            auth_json=auth,
        )
        os.environ["CODEX_AS_API_TOKEN_URL"] = emu.token_url
        yield emu
    finally:
        # Ctrl-C is how the emulator stops: it must exit cleanly on it.
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    assert code == 0, f"the emulator exited with {code} on SIGINT"


@pytest.fixture(scope="session")
def provider(emulator: Emulator):
    from codex_as_api import ChatGPTOAuthProvider

    return ChatGPTOAuthProvider(
        auth_json_path=str(emulator.auth_json), base_url=emulator.upstream_url, timeout=60
    )


@pytest.fixture(scope="session")
def async_provider(emulator: Emulator):
    from codex_as_api import AsyncChatGPTOAuthProvider

    return AsyncChatGPTOAuthProvider(
        auth_json_path=str(emulator.auth_json), base_url=emulator.upstream_url, timeout=60
    )
