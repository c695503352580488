"""The exit codes of the README's table, each proven by a real `inferstack` process against a real platform:
0 ok, 1 invalid or refused (nothing written), 2 unreadable input, 3 written but not Ready, 4 platform unreachable,
130 interrupted. Every command keeps to the same table (`events`/`status`/`logs` of an unknown service included)."""

from __future__ import annotations

import re
import signal
import sys
import time

import pytest
from cli_harness import QUICKSTART, TIMESTAMPED, invoke, run, service_file, spawn, start_platform, wait_ready

from inferstack.testing import ROOT


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("exit-codes"))
    yield p
    p.stop()


def _stored(platform) -> dict:
    with platform.client() as client:
        return {s["metadata"]["key"]: s["metadata"]["resource_version"] for s in client.list_services()}


def test_the_readme_table_lists_each_code_and_each_has_a_test_here():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Exit codes"):]
    codes = [int(c) for c in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)]
    assert codes == [0, 1, 2, 3, 4, 130]
    tests = [name for name in globals() if name.startswith("test_exit_")]
    assert all(any(name.startswith(f"test_exit_{code}_") for name in tests) for code in codes), tests


def test_exit_0_apply_is_ready_and_the_output_ends_with_a_newline(platform):
    result = run(platform.data_dir, "apply", str(QUICKSTART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(TIMESTAMPED + r"Ready: chat/stable, chat/canary after", result.stdout, re.MULTILINE)
    assert result.stdout.endswith("\n")


def test_exit_1_refused_or_unknown_writes_nothing(platform, tmp_path):
    wait_ready(platform, "chat")
    before = _stored(platform)
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("subnet: subnet-a", "subnet: subnet-b", 1))
    refused = invoke(platform.data_dir, "apply", str(bad))
    assert refused.returncode == 1 and "subnet.zone_matches_queue" in refused.stderr
    assert "nothing written" in refused.stderr
    empty = tmp_path / "empty.yaml"
    empty.write_text("# everything commented out\n# services: []\n")
    declared_nothing = invoke(platform.data_dir, "apply", str(empty))
    assert declared_nothing.returncode == 1 and "declares nothing" in declared_nothing.stderr
    assert _stored(platform) == before
    for args in (("status", "nope"), ("events", "nope"), ("logs", "nope", "main"), ("logs", "chat", "nope"),
                 ("delete", "nope"), ("keys", "show", "nope")):
        unknown = invoke(platform.data_dir, *args)
        assert unknown.returncode == 1, (args, unknown.stdout, unknown.stderr)
        assert "does not exist" in unknown.stderr, args


def test_exit_2_unreadable_input_or_a_wrong_command_line(platform, tmp_path):
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("services:\n\t- name: chat\n")
    for command in ("validate", "plan", "apply"):
        result = invoke(platform.data_dir, command, str(tabs))
        assert result.returncode == 2, command
        assert "tabs.yaml:2:1" in result.stderr and "→- name: chat" in result.stderr and "tab" in result.stderr
    assert invoke(platform.data_dir, "apply", str(tmp_path / "missing.yaml")).returncode == 2
    assert invoke(platform.data_dir, "apply").returncode == 2
    assert invoke(platform.data_dir, "status", "--no-such-option").returncode == 2


def test_exit_3_written_but_degraded_says_what_was_written(platform, tmp_path):
    crashing = service_file(tmp_path, "crashing", command=[sys.executable, "-c", "import sys; sys.exit(3)"])
    result = run(platform.data_dir, "apply", str(crashing), timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "code 3" in result.stderr
    # Restarts were printed as they happened, each on its own timestamped line, before the rollout was given up.
    restarts = [line for line in result.stdout.splitlines() if re.match(TIMESTAMPED + "crashing/main", line)
                and "restart" in line]
    assert restarts, result.stdout
    assert "the change was applied (generation 1) but is not Ready — see `inferstack status crashing`" in \
        result.stderr
    assert "crashing" in _stored(platform)  # written: 3 is not 1


def test_exit_3_written_but_not_ready_before_the_timeout(platform, tmp_path):
    slow = service_file(tmp_path, "slow", env={"ECHO_STARTUP_DELAY_S": "5"})
    result = invoke(platform.data_dir, "apply", str(slow), "--timeout", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "not every deployment was Ready after 1s; the change was applied (generation 1) and the rollout " \
           "continues — see `inferstack status slow`" in result.stderr


def test_exit_4_no_platform_answers(tmp_path):
    for args in (("status",), ("apply", str(QUICKSTART)), ("keys", "show", "chat"), ("events",)):
        result = invoke(tmp_path / "nothing-here", *args)
        assert result.returncode == 4, args
        assert "no platform is running" in result.stderr
    gone = invoke(tmp_path, "status")
    assert gone.returncode == 4


def test_exit_130_ctrl_c_stops_following_and_the_rollout_goes_on(platform, tmp_path):
    late = service_file(tmp_path, "late", env={"ECHO_STARTUP_DELAY_S": "2"})
    proc = spawn(platform.data_dir, "apply", str(late))
    seen = []
    deadline = time.monotonic() + 20
    while not any(re.match(TIMESTAMPED + "late/main: ", line) for line in seen):
        assert time.monotonic() < deadline and proc.poll() is None, seen
        seen.append(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, out + err
    assert "stopped following; the change was applied (generation 1) and the rollout continues — see " \
           "`inferstack status late`" in err
    wait_ready(platform, "late")  # the rollout went on without the CLI
