"""`inferstack.spec` imports nothing of ours beyond itself, no pulumi, and does no I/O at import or validate."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SPEC = Path(__file__).resolve().parents[2] / "inferstack" / "spec"
IO_CALLS = {"open", "urlopen", "socket", "connect", "system", "Popen", "run"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append("." * node.level + (node.module or ""))
    return out


def test_spec_imports_only_itself_and_libraries():
    for path in SPEC.glob("*.py"):
        for name in _imports(path):
            assert not name.startswith("inferstack"), f"{path.name} imports {name}"
            assert not name.startswith(".."), f"{path.name} imports {name} (outside the spec package)"
            assert not name.startswith("pulumi"), f"{path.name} imports {name}"


def test_spec_calls_no_io_functions_except_explicit_file_loading():
    for path in SPEC.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                assert name not in IO_CALLS, f"{path.name}:{node.lineno} calls {name}"
    # the one sanctioned read: load_file(path) reads the file the caller names
    assert "read_text" in (SPEC / "stack.py").read_text()


def test_importing_spec_loads_no_pulumi_and_no_platform():
    code = ("import sys, inferstack.spec; bad = [m for m in sys.modules if m.startswith(('pulumi', "
            "'inferstack.platform', 'inferstack.plan', 'inferstack.targets', 'httpx'))]; print(bad); "
            "sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
