"""The CLI's output where it goes: a pipe (full width, one timestamped line per change, a newline at the end), a
terminal (colour, a live table), and scripts (`--quiet` keys, `--format json` on every command that prints data)."""

from __future__ import annotations

import json
import os
import re
import select
import time

import httpx
import pytest
from cli_harness import QUICKSTART, TIMESTAMPED, invoke, service_file, spawn, start_platform, wait_ready

from inferstack.testing import ROOT


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    p = start_platform(tmp_path_factory.mktemp("output"))
    with p.client() as client:
        client.apply(json.loads(json.dumps(__import__("yaml").safe_load(QUICKSTART.read_text()))))
    wait_ready(p, "chat")
    yield p
    p.stop()


def test_apply_into_a_pipe_prints_progress_lines_while_it_waits(platform, tmp_path):
    late = service_file(tmp_path, "late", env={"ECHO_STARTUP_DELAY_S": "1.5"})
    proc = spawn(platform.data_dir, "apply", str(late))
    first_progress = None
    lines = []
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if first_progress is None and re.match(TIMESTAMPED + "late/main: generation 1/1; 0/1 ready", line):
            first_progress = proc.poll()  # still running: the line came while apply waited
    out = "".join(lines)
    assert proc.wait(20) == 0, out + proc.stderr.read()
    assert first_progress is None, out
    assert re.search(TIMESTAMPED + "late/main: generation 1/1; 1/1 ready; Ready=True", out, re.MULTILINE), out
    assert re.search(TIMESTAMPED + r"late/main late-main-main-1: running, ready$", out, re.MULTILINE), out
    assert out.endswith("after " + out.rsplit("after ", 1)[1]) and out.endswith("s\n")
    assert "\x1b[" not in out  # no colour codes in a pipe


def test_status_and_events_in_a_pipe_are_whole_lines_with_nothing_cut(platform):
    with platform.client() as client:
        url = client.get_service("chat")["status"]["gateway_url"]
    status = invoke(platform.data_dir, "status", "chat")
    assert status.returncode == 0
    assert f"gateway: {url} " in status.stdout  # the whole URL, at COLUMNS=80 too
    assert status.stdout.endswith("\n") and not any(line.endswith(" ") for line in status.stdout.splitlines())
    assert re.search(r"^stable\s+q-prepaid-a; cpu-small\s+2/2/2\s+1/1\s+Ready True \(\w+\)\s+90$", status.stdout,
                     re.MULTILINE), status.stdout
    listing = invoke(platform.data_dir, "status")
    assert url in listing.stdout
    events = invoke(platform.data_dir, "events", "chat")
    assert "services/chat/deployments/stable" in events.stdout and "…" not in events.stdout
    assert "security_group, subnet, use_idle" in events.stdout  # every changed field, none elided
    assert all(len(line) > 80 for line in events.stdout.splitlines()[2:4])  # wider than the COLUMNS of the run


def test_keys_are_usable_in_scripts(platform):
    shown = invoke(platform.data_dir, "keys", "show", "chat", "--quiet")
    assert shown.returncode == 0 and re.fullmatch(r"isk_[A-Za-z0-9_-]+\n", shown.stdout), shown.stdout
    again = invoke(platform.data_dir, "keys", "show", "chat", "--quiet")
    assert again.returncode == 1 and again.stdout == ""
    assert "`inferstack keys rotate chat`" in again.stderr
    rotated = invoke(platform.data_dir, "keys", "rotate", "chat", "--format", "json")
    answer = json.loads(rotated.stdout)
    assert rotated.returncode == 0 and answer["service"] == "chat" and answer["key"].startswith("isk_")
    quiet = invoke(platform.data_dir, "keys", "rotate", "chat", "-q").stdout.strip()
    url = invoke(platform.data_dir, "status", "chat", "--gateway-url").stdout.strip()
    assert url.startswith("http://127.0.0.1:")
    deadline = time.monotonic() + 10
    while True:  # the new key reaches the gateway with the next routing snapshot
        answered = httpx.post(f"{url}/v1/predict", json={"input": "hi"}, headers={"Authorization": f"Bearer {quiet}"})
        if answered.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answered.status_code == 200
    old = httpx.post(f"{url}/v1/predict", json={"input": "hi"},
                     headers={"Authorization": f"Bearer {answer['key']}"})
    assert old.status_code == 401


def test_every_command_that_prints_data_has_json(platform, tmp_path):
    logs = json.loads(invoke(platform.data_dir, "logs", "chat", "stable", "--tail", "2", "--format", "json").stdout)
    assert logs["service"] == "chat" and len(logs["instances"]) == 2
    assert all(len(i["lines"]) <= 2 for i in logs["instances"])
    dry = json.loads(invoke(platform.data_dir, "delete", "chat", "--dry-run", "--format", "json").stdout)
    assert dry["dry_run"] is True and dry["writes"] == 0
    status = json.loads(invoke(platform.data_dir, "status", "chat", "--format", "json").stdout)
    assert status["service"]["metadata"]["key"] == "chat"
    events = json.loads(invoke(platform.data_dir, "events", "chat", "--format", "json").stdout)
    assert events and {"seq", "object", "action"} <= set(events[0])
    rules = json.loads(invoke(platform.data_dir, "rules", "--format", "json").stdout)
    assert {"rule": "stack.declares_nothing", "severity": "error",
            "summary": "a stack file declares at least one service or inventory object"} in rules
    doomed = service_file(tmp_path, "doomed")
    invoke(platform.data_dir, "apply", str(doomed), "--no-wait")
    deleted = json.loads(invoke(platform.data_dir, "delete", "doomed", "--format", "json").stdout)
    assert deleted["writes"] >= 2 and {"object": "services/doomed", "action": "delete"} in deleted["changed"]


def test_version_and_short_help():
    version = invoke(ROOT, "--version")
    assert version.returncode == 0 and re.fullmatch(r"inferstack \d+\.\d+\.\d+\S*\n", version.stdout)
    for args in (("-h",), ("apply", "-h"), ("keys", "show", "-h")):
        shown = invoke(ROOT, *args)
        assert shown.returncode == 0 and shown.stdout.startswith("Usage: inferstack")
    usage = invoke(ROOT, "logs", "-h").stdout
    assert "Usage: inferstack logs [OPTIONS] SERVICE DEPLOYMENT" in usage
    assert "--tail N" in usage and "--data-dir DIR" in usage
    assert not re.search(r"<(bool|str|int|float|path|list\[\w+\])>|\{\w+\}", usage + invoke(ROOT, "validate", "-h").stdout)


def _pty_run(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run `inferstack ARGS` on a pseudo-terminal (80 columns): exit code and everything it wrote."""
    import pty
    import struct
    import sys
    from fcntl import ioctl
    from termios import TIOCSWINSZ

    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal on stdin, stdout and stderr
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "inferstack", *args], env)
    ioctl(fd, TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_on_a_terminal_the_plan_is_coloured_and_apply_shows_a_live_table(platform, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERSTACK_", "NO_COLOR", "FORCE_COLOR",
                                                                     "TTY_", "COLUMNS"))}
    env.update(INFERSTACK_DATA_DIR=str(platform.data_dir), TERM="xterm-256color")
    code, out = _pty_run(["apply", str(service_file(tmp_path, "tty"))], env)
    assert code == 0, out
    assert "\x1b[32m+ create   service    tty\x1b[0m" in out  # create is green
    assert re.search(r"│ tty/main\s+│ 1/1\s+│ 1/1\s+│ \x1b\[32mReady\x1b\[0m │", out), out  # Ready in green
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "┃ Deployment ┃ Ready ┃ Generation ┃" in plain
    assert plain.endswith("\n")  # the live display ends on a line of its own
