"""Every shell block of the README runs as written — real `inferstack` processes, a real platform started by the
README's own `platform serve --detach` in `~/.inferstack` (HOME is a temp dir), real curl — except the blocks marked
`<!-- readme-test: skip (reason) -->`, which need make, the Pulumi CLI or a cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inferstack.testing import ROOT

README = ROOT / "README.md"
SKIP = "<!-- readme-test: skip"


def shell_blocks(text: str) -> list[tuple[str, bool]]:
    """(block text, runnable) of every ```sh block, in order."""
    out = []
    for match in re.finditer(r"^```sh\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
        before = text[:match.start()].rstrip().rsplit("\n", 1)[-1]
        out.append((match.group(1), not before.startswith(SKIP)))
    return out


def test_skipped_blocks_say_why_and_the_tour_is_runnable():
    blocks = shell_blocks(README.read_text())
    assert len(blocks) >= 6
    assert all(re.search(r"readme-test: skip \(.+\) -->", README.read_text()) for _, runnable in blocks
               if not runnable)
    runnable = "".join(b for b, ok in blocks if ok)
    for command in ("inferstack validate", "inferstack platform serve --detach", "inferstack apply",
                    "inferstack keys show chat --quiet", "curl", "inferstack render", "inferstack platform stop"):
        assert command in runnable, command


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's calls use curl, which is not installed")
def test_the_readmes_shell_blocks_run_as_written(tmp_path):
    script = "set -euo pipefail\n" + "".join(b for b, ok in shell_blocks(README.read_text()) if ok)
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERSTACK_")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    try:
        result = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                                timeout=180, check=False)
        assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    finally:
        subprocess.run([sys.executable, "-m", "inferstack", "platform", "stop"], env=env, capture_output=True,
                       timeout=60, check=False)
    out = result.stdout
    assert '"output": "IH"' in out and '"deployment": "canary"' in out  # /v1/predict, pinned to the canary
    assert '"object": "list"' in out and '"owned_by": "inferstack"' in out  # /v1/models
    assert re.fullmatch(r"isk_[A-Za-z0-9_-]+\n", (work / "chat.key").read_text())
    assert "No changes: the platform already matches the file" in out
    assert (work / "inferstack.schema.json").stat().st_size > 1000
    assert any((work / "manifests").glob("*-deployment-*.yaml"))
    assert (home / ".inferstack" / "token").exists() and not (home / ".inferstack" / "platform.json").exists()
