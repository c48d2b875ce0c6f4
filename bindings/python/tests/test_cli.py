"""The `codex-as-api` command of the wheel: the Rust CLI run in the Python process."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

import codex_as_api
from conftest import cli


def test_version():
    out = subprocess.run([cli(), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"codex-as-api {codex_as_api.__version__}"


def test_python_dash_m_runs_the_same_cli():
    out = subprocess.run(
        [sys.executable, "-m", "codex_as_api", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"codex-as-api {codex_as_api.__version__}"


def test_a_usage_error_exits_2():
    out = subprocess.run([cli(), "--no-such-flag"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "--no-such-flag" in out.stderr


def start_demo(codex_home) -> tuple[subprocess.Popen, str]:
    """`codex-as-api --demo --port 0`, and the address its log line names."""
    proc = subprocess.Popen(
        [cli(), "--demo", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={"CODEX_HOME": str(codex_home), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", line)
        if m:
            return proc, m.group(1)
    raise AssertionError(f"the server exited ({proc.wait()}) without a 'listening on' line")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_answers_health_and_stops_on_a_signal(codex_home, sig):
    proc, base = start_demo(codex_home)
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=30) as resp:
            assert resp.status == 200
            assert json.load(resp)["status"] == "ok"
        body = json.dumps({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]})
        req = urllib.request.Request(
            f"{base}/v1/chat/completions", body.encode(), {"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.load(resp)["object"] == "chat.completion"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None
        rest = proc.stderr.read()
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ctrl_c_ends_a_command_that_does_not_catch_it(tmp_path):
    # `login` waits for the browser's callback and leaves Ctrl-C to its default action, as
    # the native binary does: the process must die of it, not swallow it in Python's handler.
    proc = subprocess.Popen(
        [
            cli(), "login", "--no-browser", "--callback-port", "0",
            "--auth-base-url", "http://127.0.0.1:9", "--auth-path", str(tmp_path / "auth.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Waiting for the sign-in"):
                break
        else:
            raise AssertionError(f"login exited ({proc.wait()}) before waiting")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == -signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_cli_names_itself_for_the_servers_it_starts():
    # `codex-as-api claude` starts `codex-as-api serve` through CODEX_AS_API_EXE.
    from codex_as_api._cli import self_exe

    assert self_exe() == cli()
