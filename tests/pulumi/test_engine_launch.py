"""The provider process started the way the Pulumi CLI starts it for this repository's project (point 1 of issue 11).

The engine runs `pulumi-python:dynamic` providers through its launcher script with the working directory set to the
program's folder (`main: stacks/`), and the launcher resolves the project's `virtualenv: .venv` from there — so it
looks for `stacks/.venv`. The language host, which runs the program itself, resolves it from the project root. Our
layout must work for both: `stacks/.venv` is a link to the project's `.venv` (committed, and made again by
`make install`). `engine.ProviderHost.launched` runs the upstream launcher (a verbatim copy) with the engine's
working directory, runtime-option variables and config; the acceptance sequence then runs through it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from engine import DIFF_NONE, LaunchError, ProviderHost, program_dir
from inferstack_mocks import Platform
from stack_driver import Stack, configure, lifecycle, program_inputs, service_spec

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
VENV = SETTINGS["runtime"]["options"]["virtualenv"]
MAIN = program_dir(ROOT, SETTINGS.get("main"))


@pytest.fixture(autouse=True)
def _installed() -> None:
    if not (ROOT / VENV / "bin" / "python").exists():
        pytest.skip(f"the project's virtualenv is not installed at {ROOT / VENV}: run `make install`")


def test_the_virtualenv_resolves_from_the_program_folder_as_from_the_root():
    assert MAIN == ROOT / "stacks"  # where the engine starts providers: not the project root
    from_main, from_root = MAIN / VENV, ROOT / VENV
    assert (from_main / "bin" / "python").exists(), f"{from_main} does not resolve: the launcher would exit 1"
    assert from_main.resolve() == from_root.resolve()  # the same environment the program runs in


def test_the_launcher_started_in_the_program_folder_serves_the_acceptance_sequence(platform: Platform):
    with ProviderHost.launched(ROOT) as host:
        lifecycle(host, platform, "launched")
        assert "Traceback" not in host.stderr.read_text()


def test_the_launcher_started_in_the_project_root_serves_the_provider_too(platform: Platform):
    with ProviderHost.launched(ROOT, cwd=ROOT) as host:
        configure(host, platform)
        stack = Stack(host, "rooted")
        spec = service_spec("rooted", {"stable": 100})
        stack.up(spec)
        assert all(d is not None and d.changes == DIFF_NONE for d in stack.up(spec).values())
        inputs = program_inputs(spec)
        assert stack.deployment("stable").check(inputs[("Deployment", "rooted/stable")]).failures == []
        stack.destroy()


def test_without_the_link_the_launcher_exits_as_the_issue_saw(tmp_path: Path):
    """What the engine did with this layout before the link: the launcher cannot find `stacks/.venv`."""
    project = tmp_path / "project"
    (project / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", project / "Pulumi.yaml")
    (project / VENV).symlink_to(ROOT / VENV)
    with pytest.raises(LaunchError) as caught:
        ProviderHost.launched(project)
    assert caught.value.returncode == 1
    assert f"{project / 'stacks' / VENV}\" doesn't exist" in caught.value.stderr
