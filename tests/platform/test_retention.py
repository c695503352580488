"""Logs and work dirs of deleted deployments: kept for the retention period after the drain, then removed; a live
deployment's never; the setting is checked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from inferstack.platform import retention


def _make(data: Path, svc: str, dep: str, uid: str, *, age_s: float = 0.0, deleted_age_s: float | None = None) -> None:
    now = time.time()
    for directory in (retention.log_dir(data, svc, dep, uid), retention.work_dir(data, svc, dep, uid)):
        directory.mkdir(parents=True)
        f = directory / "x-1.log"
        f.write_text("line\n")
        os.utime(f, (now - age_s, now - age_s))
        os.utime(directory, (now - age_s, now - age_s))
        if deleted_age_s is not None:
            mark = directory / retention.DELETED_MARK
            mark.write_text("t\n")
            os.utime(mark, (now - deleted_age_s, now - deleted_age_s))


def test_only_deleted_deployments_past_retention_are_removed(tmp_path: Path) -> None:
    _make(tmp_path, "chat", "live", "u-live", age_s=10_000)  # old files, but the deployment exists
    _make(tmp_path, "chat", "gone", "u-expired", age_s=10_000, deleted_age_s=4000)
    _make(tmp_path, "chat", "gone", "u-recent", age_s=10_000, deleted_age_s=10)  # drained 10 s ago
    _make(tmp_path, "old", "gone", "u-unmarked", age_s=5000)  # deleted while the platform was down: by age
    legacy = tmp_path / "logs" / "chat" / "live" / "chat-live-main-1.log"  # before uid dirs, an instance writes it
    legacy.write_text("x\n")
    stale = tmp_path / "logs" / "chat" / "live" / "chat-live-main-0.log"
    stale.write_text("x\n")
    for f in (legacy, stale):
        os.utime(f, (time.time() - 9000, time.time() - 9000))
    removed = retention.remove_expired(tmp_path, {"u-live"}, 3600, in_use=[str(legacy)])
    names = sorted({p.name for p in removed})
    assert names == ["chat-live-main-0.log", "u-expired", "u-unmarked"]
    assert retention.log_dir(tmp_path, "chat", "live", "u-live").is_dir() and legacy.exists()
    assert retention.work_dir(tmp_path, "chat", "gone", "u-recent").is_dir()
    assert not (tmp_path / "logs" / "old").exists() and not (tmp_path / "work" / "old").exists()  # empty dirs go


def test_logs_of_an_object_are_read_by_its_uid_only(tmp_path: Path) -> None:
    _make(tmp_path, "chat", "main", "old-uid")
    _make(tmp_path, "chat", "main", "new-uid")
    (retention.log_dir(tmp_path, "chat", "main", "new-uid") / "x-1.log").write_text("a\nb\nc\n")
    assert retention.read_logs(tmp_path, "chat", "main", "new-uid", 2) == [{"instance": "x-1", "lines": ["b", "c"]}]
    assert retention.read_logs(tmp_path, "chat", "main", "never", 2) == []


@pytest.mark.parametrize("raw", ["nan", "inf", "1e400", "-1", "a day"])
def test_a_bad_retention_setting_is_refused_with_its_name_and_value(raw: str) -> None:
    with pytest.raises(ValueError, match=f"INFERSTACK_LOG_RETENTION_S={raw!r}"):
        retention.retention_from_env({"INFERSTACK_LOG_RETENTION_S": raw})


def test_the_retention_defaults_to_one_day() -> None:
    assert retention.retention_from_env({}) == 86400
    assert retention.retention_from_env({"INFERSTACK_LOG_RETENTION_S": "0"}) == 0
