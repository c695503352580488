"""`make demo` runs `inferstack demo`: the README's main job, end to end on the embedded platform."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_applies_quickstart_shows_the_split_and_leaves_no_process_nor_temp_dir(tmp_path):
    result = subprocess.run([sys.executable, "-m", "inferstack", "demo", "--requests", "200"], check=False,
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)})
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # Progress as lines (the output is not a terminal), each deployment reaching its count.
    assert re.search(r"^\d\d:\d\d:\d\d chat/stable: generation 1/1; 2/2 ready", out, re.MULTILINE), out
    assert re.search(r"^\d\d:\d\d:\d\d chat/canary: generation 1/1; 1/1 ready", out, re.MULTILINE), out
    rows = [line.split() for line in out.splitlines()]
    # Smooth weighted round robin is exact over whole cycles: 180 / 20 of 200.
    assert ["stable", "90", "180", "90.0%"] in rows and ["canary", "10", "20", "10.0%"] in rows, out
    assert ["stable", "50", "100", "50.0%"] in rows, out
    assert "platform stopped" in out
    assert _processes_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == []  # the demo's temp data dir is gone


def _processes_under(directory: Path) -> list[int]:
    """Live processes whose working directory or command line lies under `directory` (instances run in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = str((entry / "cwd").resolve())
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            if ") Z " in (entry / "stat").read_text():
                continue
        except OSError:
            continue
        if cwd.startswith(str(directory)) or str(directory) in cmdline:
            found.append(int(entry.name))
    return found
