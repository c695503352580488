"""Secrets at rest: sealed in platform.db and its WAL with the data dir's key (its own 0600 file); rows of an older
data dir are sealed on open and no plain copy is left in the file; the data dir is 0700 with every file 0600."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from platform_harness import PlatformProcess, deployment, service

from inferstack.platform import server
from inferstack.platform.control import Platform, WriteContext
from inferstack.platform.secretbox import KEY_FILE, SecretBox, SecretBoxError
from inferstack.platform.store import DB_NAME, Store, dump_database

SECRET = "plain-secret-8d2f1c"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _raw(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.iterdir() if p.name.startswith(DB_NAME))


def _write_secret(store: Store, value: str = SECRET) -> None:
    platform = Platform(store)
    platform.put_service("vault", service("vault"), WriteContext())
    platform.put_deployment("vault", "stable", deployment("stable", env=[{"name": "T", "secret": value}]),
                            WriteContext())


def test_a_written_secret_never_reaches_the_database_or_its_wal_in_plain_text(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    _write_secret(store)
    assert (tmp_path / f"{DB_NAME}-wal").exists()
    assert SECRET.encode() not in _raw(tmp_path)
    assert store.get("deployment", "stable", "vault").spec["env"][0]["secret"] == SECRET
    stored = json.loads(next(r for r in store.dump()["objects"] if r[0] == "deployment")[8])
    assert stored["env"][0]["secret"].startswith("fernet:")
    for name in (KEY_FILE, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        assert _mode(tmp_path / name) == 0o600, name
    store.close()


def test_plain_rows_of_an_older_data_dir_are_sealed_on_open_and_leave_no_plain_copy(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    _write_secret(store, "placeholder")
    store.close()
    # An older platform: the secret stored as plain text, files readable by everyone.
    conn = sqlite3.connect(tmp_path / DB_NAME)
    spec = json.loads(conn.execute("SELECT spec FROM objects WHERE kind = 'deployment'").fetchone()[0])
    spec["env"][0]["secret"] = SECRET
    conn.execute("UPDATE objects SET spec = ? WHERE kind = 'deployment'", (json.dumps(spec),))
    conn.commit()
    conn.close()
    for path in tmp_path.iterdir():
        os.chmod(path, 0o644)
    assert SECRET.encode() in _raw(tmp_path)
    before = dump_database(tmp_path / DB_NAME)

    reopened = Store.open(tmp_path)
    assert reopened.get("deployment", "stable", "vault").spec["env"][0]["secret"] == SECRET
    after = reopened.dump()
    assert after["events"] == before["events"] and after["meta"] == before["meta"]  # no write, no event, no revision
    assert [r[:8] for r in after["objects"]] == [r[:8] for r in before["objects"]]
    reopened.close()
    assert SECRET.encode() not in _raw(tmp_path), "a plain copy survived in the file or the WAL"
    assert _mode(tmp_path / DB_NAME) == 0o600


def test_a_key_that_does_not_open_the_secrets_is_a_clear_error(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    _write_secret(store)
    store.close()
    (tmp_path / KEY_FILE).unlink()
    other = Store.open(tmp_path)  # a new key is made; the old secrets do not open with it
    with pytest.raises(SecretBoxError, match="not the one it was sealed with"):
        other.get("deployment", "stable", "vault")
    other.close()


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    boxes: list[SecretBox] = []
    threads = [threading.Thread(target=lambda: boxes.append(SecretBox(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(boxes) == 8  # none failed
    sealed = boxes[0].seal({"secret": "x"})
    assert all(box.open(sealed) == {"secret": "x"} for box in boxes)
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]


def test_the_server_makes_an_open_data_dir_private_and_keeps_it_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs" / "svc").mkdir(parents=True)
    (data / "logs" / "svc" / "old.log").write_text("x")
    os.symlink("/etc/hostname", data / "link")  # never followed
    for path in (data, data / "logs", data / "logs" / "svc"):
        os.chmod(path, 0o755)
    os.chmod(data / "logs" / "svc" / "old.log", 0o644)
    etc_mode = _mode(Path("/etc/hostname"))
    platform = PlatformProcess(data).start()
    try:
        with platform.client() as client:
            client.put_service("vault", service("vault"))
        loose = [f"{p} {oct(_mode(p))}" for p in [data, *data.rglob("*")]
                 if not p.is_symlink() and _mode(p) & 0o077]
        assert loose == []
        assert _mode(data / "logs" / "svc" / "old.log") == 0o600 and _mode(data) == 0o700
        assert _mode(Path("/etc/hostname")) == etc_mode
    finally:
        platform.stop()


def test_a_detached_server_log_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server.start_detached(data, runtime=False)
    try:
        assert _mode(data / server.LOG_FILE) == 0o600 and _mode(data) == 0o700
    finally:
        server.stop(data)
