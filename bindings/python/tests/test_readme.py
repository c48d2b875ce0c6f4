"""The Python examples of README.md and of the package's README, run as written on the
emulator (CODEX_AS_API_DEMO=true: `ChatGPTOAuthProvider()` needs no login then)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def examples() -> list[tuple[str, str]]:
    found = []
    for var in ("CODEX_AS_API_README", "CODEX_AS_API_PY_README"):
        path = os.environ.get(var)
        assert path, f"{var} names the README to check (test.sh sets it)"
        text = Path(path).read_text()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            if "codex_as_api" in block:
                found.append((f"{Path(path).parent.name}/{Path(path).name}#{i}", block))
    return found


EXAMPLES = examples()


def test_both_readmes_have_examples():
    assert len(EXAMPLES) >= 2, EXAMPLES


@pytest.mark.parametrize("code", [c for _, c in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_a_readme_example_runs(code, codex_home):
    env = {**os.environ, "CODEX_AS_API_DEMO": "true", "CODEX_HOME": str(codex_home)}
    env.pop("CODEX_AS_API_TOKEN_URL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip(), "the example printed nothing"
