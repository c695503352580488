"""A minimal platform process for the process-tree tests: spawns, adopts and stops one instance whose tree escapes
its session twice (a ``setsid`` child holding the instance's listening socket, and a double-forked daemon).

    python tree_platform.py stop LOG_DIR     spawn, print the record, stop it (1 s graceful period), print the result
    python tree_platform.py spawn LOG_DIR    spawn, print the record, wait to be killed
    python tree_platform.py adopt LOG_DIR RECORD_JSON   adopt the recorded instance, stop it, print the result

Runs in its own process so that a subreaper (set where there are no cgroups: INFERSTACK_CGROUPS=0) is this process,
not the test runner. Each printed line is one JSON object."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from inferstack.platform.runtime import InstanceProcess, ProcessTree, free_port
from inferstack.platform.runtime.tree import _children_of, _stat, is_subreaper

# Listens on $PORT and ignores SIGTERM; a setsid child inherits the listening socket; a daemon double-forks away.
INSTANCE = r"""
import os, signal, socket, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
child = os.fork()
if child == 0:
    os.setsid()
    time.sleep(300)
    os._exit(0)
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    daemon = os.fork()
    if daemon:
        os.write(w, str(daemon).encode())
        os._exit(0)
    s.close()
    time.sleep(300)
    os._exit(0)
os.waitpid(middle, 0)
print("kids", child, int(os.read(r, 32)), flush=True)
while True:
    time.sleep(1)
"""


async def wait_for_kids(log: Path) -> list[int]:
    for _ in range(1000):
        text = log.read_text() if log.exists() else ""
        if "kids" in text:
            return [int(p) for p in text.split("kids", 1)[1].split()[:2]]
        await asyncio.sleep(0.01)
    raise SystemExit(f"the instance never started its children: {log.read_text()}")


def zombie_children() -> list[int]:
    return [p for p in _children_of(os.getpid()) if (s := _stat(p)) is not None and not s.alive]


async def spawn(log_dir: Path) -> tuple[InstanceProcess, dict]:
    port = free_port()
    log = log_dir / "instance.log"
    tree = ProcessTree.new("treetest")
    process = InstanceProcess.spawn([sys.executable, "-c", INSTANCE], env={"PATH": os.environ["PATH"],
                                    "PORT": str(port)}, log_path=log, tree=tree)
    kids = await wait_for_kids(log)
    record = {"pid": process.pid, "start_time": process.start_time, "marker": tree.marker,
              "cgroup": str(tree.cgroup) if tree.cgroup else None, "port": port, "kids": kids}
    print(json.dumps(record), flush=True)
    return process, record


async def stop(process: InstanceProcess) -> None:
    stopped = await process.terminate(1.0)
    await asyncio.sleep(0.1)
    assert process.tree is not None
    print(json.dumps({"exit_code": stopped.exit_code, "forced": stopped.forced, "leftovers": list(stopped.leftovers),
                      "left": sorted(process.tree.members()), "zombies": zombie_children(),
                      "subreaper": is_subreaper()}), flush=True)


async def main(argv: list[str]) -> None:
    mode, log_dir = argv[0], Path(argv[1])
    if mode == "adopt":
        record = json.loads(argv[2])
        process = InstanceProcess.adopt(record["pid"], record["start_time"],
                                        tree=ProcessTree(record["marker"], record["cgroup"]))
        assert process is not None, "the recorded instance is gone"
        await stop(process)
        return
    process, _ = await spawn(log_dir)
    if mode == "stop":
        await stop(process)
    else:
        await asyncio.sleep(300)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
