"""Every example renders to objects that pass offline validation, byte-identical to its golden file, every time.

Regenerate the golden files after an intended change: `INFERSTACK_UPDATE_GOLDEN=1 .venv/bin/pytest tests/kubernetes`,
then read the diff."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from k8s_checks import EXAMPLES, GOLDEN, ROOT, problems

from inferstack.spec import default_inventory, load_file
from inferstack.targets.kubernetes import render

UPDATE = os.environ.get("INFERSTACK_UPDATE_GOLDEN") == "1"


def golden_text(path) -> str:
    """What the golden file of an example holds: its warnings as comments, then every object."""
    loaded = load_file(path, default_inventory())
    assert loaded.stack is not None and loaded.report.ok, f"{path.name} is not valid:\n{loaded.report}"
    result = render(loaded.stack)
    head = f"# inferstack render examples/{path.name} (golden file: INFERSTACK_UPDATE_GOLDEN=1 regenerates it)\n"
    head += "".join(f"# warning: {w}\n" for w in result.warnings)
    return head + result.to_documents()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_renders_objects_that_pass_offline_validation(example):
    loaded = load_file(example, default_inventory())
    assert loaded.stack is not None and loaded.report.ok, str(loaded.report)
    result = render(loaded.stack)
    assert result.objects
    assert problems(result.objects, loaded.stack.kubernetes_options.gateway_api_minor) == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_renders_byte_identical_to_its_golden_file(example):
    text = golden_text(example)
    golden = GOLDEN / f"{example.stem}.yaml"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file for {example.name}: run INFERSTACK_UPDATE_GOLDEN=1 pytest tests/kubernetes"
    assert text == golden.read_text(encoding="utf-8"), (
        f"{example.name} renders differently from {golden.relative_to(ROOT)}; if intended, regenerate with "
        f"INFERSTACK_UPDATE_GOLDEN=1 and review the diff")


def test_every_golden_file_belongs_to_an_example():
    stems = {p.stem for p in EXAMPLES}
    assert sorted(p.name for p in GOLDEN.glob("*.yaml") if p.stem not in stems) == []


def test_golden_files_hold_no_secret_values():
    for example in EXAMPLES:
        golden = GOLDEN / f"{example.stem}.yaml"
        loaded = load_file(example, default_inventory())
        secrets = [e.secret.get_secret_value() for s in loaded.stack.services for d in s.deployments
                   for e in [*d.env, *(e for r in d.roles or [] for e in r.env)] if e.secret is not None]
        if golden.exists():
            text = golden.read_text(encoding="utf-8")
            assert [s for s in secrets if s in text] == []


def test_render_is_byte_identical_across_processes_and_hash_seeds():
    code = ("import sys; from inferstack.spec import load_file, default_inventory; "
            "from inferstack.targets.kubernetes import render; "
            "[sys.stdout.write(render(load_file(p, default_inventory()).stack).to_documents() + '\\0') "
            "for p in sys.argv[1:]]")
    in_process = "".join(render(load_file(e, default_inventory()).stack).to_documents() + "\0" for e in EXAMPLES)
    for seed in ("1", "2"):
        run = subprocess.run([sys.executable, "-c", code, *map(str, EXAMPLES)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        assert run.stdout == in_process
