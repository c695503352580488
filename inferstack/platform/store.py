"""The platform's state in SQLite (WAL): one row per object, an event log, and a revision counter.

Layout (schema version 3):
- `objects(kind, parent, key)` — every object: inventory kinds (`vpcs`, `queues`, …: the `Inventory` attribute
  names), `service`, `deployment` and `traffic` (parent = the service key). Columns: uid, generation,
  resource_version, created_at, updated_at, spec (JSON; secret values sealed, `fernet:…`, with the data dir's key:
  `secretbox.py` — plain text never reaches the file or its WAL), status (JSON, owned by controllers after creation).
- `events(seq)` — one log for what users and controllers did. A spec write appends one row per object: time, object
  path, service, action (`create`, `update`, …), request id, generation, resource version and the changed spec
  paths (never values, so never secrets). A runtime event (`record_event`: an instance started, crashed or was
  preempted, the gateway restarted, …) appends a row with action `event`, a `type` (`Normal` | `Warning`), a
  CamelCase `reason` and a `message` a person can read; its message must never carry a secret. Repeats aggregate,
  as Kubernetes aggregates events: a runtime event identical to one recorded for the same object within
  `EVENT_AGGREGATION_S` (10 minutes) adds no row — that row moves to the end of the log (a new `seq`, so followers
  polling with `since` see it again) with its `count` incremented, `time` the latest occurrence and `first_time` the
  first. Older stores are migrated in place on open (version 1: no type/reason/message; version 2: no
  count/first_time).
- `meta(key)` — `schema_version`, `revision` (the last resource version handed out; every row write takes the next).

A `Tx` is one SQLite transaction (`BEGIN IMMEDIATE` … `COMMIT`): either every row of a write lands or none does.

The files are private: `platform.db` is created 0600 (SQLite gives its -wal and -shm the database's mode) and
tightened to it on open; `secure_delete` is on, so deleted content is overwritten. Opening a data dir written before
secrets were sealed seals every plain secret in place, then rewrites the file (VACUUM) and empties the WAL, so no
plain copy is left behind (`_seal_plain_secrets`).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from inferstack.spec import default_inventory

from .objects import now, object_path, owning_service
from .secretbox import SecretBox

SCHEMA_VERSION = 3
EVENT_AGGREGATION_S = 600.0  # identical runtime events within this window share one row (with a count)
PLATFORM = "platform"  # the kind of events about the platform itself (the gateway process, the server)
EVENT_TYPES = ("Normal", "Warning")
DB_NAME = "platform.db"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE objects (
    kind TEXT NOT NULL,
    parent TEXT NOT NULL DEFAULT '',
    key TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    generation INTEGER NOT NULL,
    resource_version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    PRIMARY KEY (kind, parent, key)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    object TEXT NOT NULL,
    service TEXT NOT NULL,
    uid TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    resource_version INTEGER NOT NULL,
    changes TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'Normal',
    reason TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    count INTEGER NOT NULL DEFAULT 1,
    first_time TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_by_object ON events (object, seq);
CREATE INDEX events_by_service ON events (service, seq);
CREATE INDEX events_by_reason ON events (object, reason, seq);
"""

# Columns (and indexes) each schema version added to the events table, to migrate older stores in place.
_MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE events ADD COLUMN type TEXT NOT NULL DEFAULT 'Normal'",
        "ALTER TABLE events ADD COLUMN reason TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN message TEXT NOT NULL DEFAULT ''"],
    3: ["ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE events ADD COLUMN first_time TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX events_by_reason ON events (object, reason, seq)"],
}

_COLUMNS = "kind, parent, key, uid, generation, resource_version, created_at, updated_at, spec, status"


@dataclass(frozen=True)
class Row:
    """One stored object."""

    kind: str
    parent: str
    key: str
    uid: str
    generation: int
    resource_version: int
    created_at: str
    updated_at: str
    spec: dict[str, Any]
    status: dict[str, Any]

    @property
    def path(self) -> str:
        return object_path(self.kind, self.key, self.parent)


@dataclass
class Change:
    """One row written by a transaction."""

    object: str
    action: str

    def to_dict(self) -> dict[str, str]:
        return {"object": self.object, "action": self.action}


def _row(values: tuple, box: SecretBox) -> Row:
    kind, parent, key, uid, gen, rv, created, updated, spec, status = values
    return Row(kind, parent, key, uid, gen, rv, created, updated, box.open(json.loads(spec)), json.loads(status))


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Leaf paths where two JSON values differ (`replicas`, `env[1].value`). Paths only: never values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in list(old) + [k for k in new if k not in old]:
            sub = f"{prefix}.{k}" if prefix else str(k)
            if k not in old or k not in new:
                out.append(sub)
            else:
                out.extend(changed_paths(old[k], new[k], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new)) for p in changed_paths(a, b, f"{prefix}[{i}]")]
    return [] if old == new else [prefix or "."]


class Tx:
    """The writes of one transaction. Every write bumps the store's revision and appends an event."""

    def __init__(self, conn: sqlite3.Connection, request_id: str, after_row: Callable[[int], None] | None,
                 box: SecretBox):
        self._conn = conn
        self._box = box
        self.request_id = request_id
        self._after_row = after_row
        self.changes: list[Change] = []

    @property
    def writes(self) -> int:
        return len(self.changes)

    def _next_revision(self) -> int:
        (rev,) = self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        rev = int(rev) + 1
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (str(rev),))
        return rev

    def get(self, kind: str, key: str, parent: str = "") -> Row | None:
        cur = self._conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE kind = ? AND parent = ? AND key = ?",
                                 (kind, parent, key))
        found = cur.fetchone()
        return _row(found, self._box) if found else None

    def put(self, kind: str, key: str, spec: dict[str, Any], *, parent: str = "",
            status: dict[str, Any] | None = None, action: str | None = None,
            bump_generation: bool = False, changes: list[str] | None = None) -> Row:
        """Create or replace an object's spec. `status` is used on create (controllers own it afterwards).

        The generation moves when the spec changes, or with `bump_generation` (a redeploy of an unchanged spec)."""
        old = self.get(kind, key, parent)
        rev = self._next_revision()
        at = now()
        if old is None:
            row = Row(kind, parent, key, uuid.uuid4().hex, 1, rev, at, at, spec, status or {})
            self._conn.execute(f"INSERT INTO objects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                               (kind, parent, key, row.uid, 1, rev, at, at, _dumps(self._box.seal(spec)),
                                _dumps(row.status)))
            paths = changes if changes is not None else sorted(spec)
            self._record(row, action or "create", paths)
            return row
        spec_changed = spec != old.spec
        gen = old.generation + (1 if spec_changed or bump_generation else 0)
        row = replace(old, generation=gen, resource_version=rev, updated_at=at, spec=spec,
                      status=old.status if status is None else status)
        self._conn.execute("UPDATE objects SET generation = ?, resource_version = ?, updated_at = ?, spec = ?, "
                           "status = ? WHERE kind = ? AND parent = ? AND key = ?",
                           (gen, rev, at, _dumps(self._box.seal(spec)), _dumps(row.status), kind, parent, key))
        paths = changes if changes is not None else changed_paths(old.spec, spec)
        self._record(row, action or "update", paths)
        return row

    def patch_status(self, kind: str, key: str, patch: dict[str, Any], *, parent: str = "",
                     action: str | None = "status") -> Row | None:
        """Merge top-level status fields into an object's status; the resource version moves, the generation not.

        `action=None` writes no event (for frequent controller heartbeats)."""
        old = self.get(kind, key, parent)
        if old is None:
            return None
        status = {**old.status, **patch}
        if status == old.status:
            return old
        rev = self._next_revision()
        at = now()
        row = replace(old, resource_version=rev, updated_at=at, status=status)
        self._conn.execute("UPDATE objects SET resource_version = ?, updated_at = ?, status = ? "
                           "WHERE kind = ? AND parent = ? AND key = ?", (rev, at, _dumps(status), kind, parent, key))
        if action is not None:
            self._record(row, action, [f"status.{k}" for k in patch if old.status.get(k) != patch[k]])
        else:
            self._count(row.path, "status")
        return row

    def delete(self, kind: str, key: str, parent: str = "") -> Row | None:
        old = self.get(kind, key, parent)
        if old is None:
            return None
        self._conn.execute("DELETE FROM objects WHERE kind = ? AND parent = ? AND key = ?", (kind, parent, key))
        row = replace(old, resource_version=self._next_revision(), updated_at=now())
        self._record(row, "delete", [])
        return row

    def _record(self, row: Row, action: str, paths: list[str]) -> None:
        self._conn.execute(
            "INSERT INTO events (time, object, service, uid, action, request_id, generation, resource_version, "
            "changes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.updated_at, row.path, owning_service(row.kind, row.key, row.parent), row.uid, action,
             self.request_id, row.generation, row.resource_version, json.dumps(paths)))
        self._count(row.path, action)

    def _count(self, path: str, action: str) -> None:
        self.changes.append(Change(path, action))
        if self._after_row is not None:
            self._after_row(len(self.changes))


def _private_files(db: Path) -> None:
    """The database file is created 0600 before SQLite opens it (its -wal and -shm take the database's mode), and
    an existing one with its -wal and -shm is tightened to 0600."""
    try:
        os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        try:
            os.chmod(path, 0o600)
        except FileNotFoundError:
            pass


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass
class Store:
    """The SQLite database of one data dir. Thread-safe: one connection behind a lock."""

    path: Path
    created: bool = False
    box: SecretBox = field(init=False, repr=False)
    _conn: sqlite3.Connection = field(init=False, repr=False)
    _lock: threading.RLock = field(init=False, repr=False, default_factory=threading.RLock)

    @classmethod
    def open(cls, data_dir: Path | str) -> Store:
        """Open (or create, with the default inventory) the store of a data dir."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(data_dir / DB_NAME)

    def __post_init__(self) -> None:
        new = not self.path.exists()
        self.box = SecretBox(self.path.parent)
        _private_files(self.path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA secure_delete = ON")
        # FULL: an acknowledged write survives a crash of the machine too, not only of the process.
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        has_schema = self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone()
        if not has_schema:
            self._create(bootstrap=new)
        else:
            (version,) = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if int(version) < SCHEMA_VERSION:
                self._migrate(int(version))
            elif int(version) != SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: schema version {version}, this platform reads {SCHEMA_VERSION}")
            self._seal_plain_secrets()

    def _migrate(self, version: int) -> None:
        """From `version` to `SCHEMA_VERSION` in one transaction (2: runtime events' type, reason and message;
        3: their count and first time)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    self._conn.execute(statement)
            self._conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _seal_plain_secrets(self) -> None:
        """Seal the secrets of rows written before secrets were sealed (an older data dir), in one transaction that
        changes no revision, generation or event (the values are the same; only their form at rest changes). Then
        rewrite the file and empty the WAL, so that no page still holds the plain text."""
        rows = [(rowid, spec) for rowid, spec in self._conn.execute("SELECT rowid, spec FROM objects")
                if SecretBox.has_plain(json.loads(spec))]
        if not rows:
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for rowid, spec in rows:
                self._conn.execute("UPDATE objects SET spec = ? WHERE rowid = ?",
                                   (_dumps(self.box.seal(json.loads(spec))), rowid))
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("VACUUM")
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _create(self, bootstrap: bool) -> None:
        """Schema, and in a new data dir the default inventory — in one transaction, so a crash leaves nothing."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._conn.execute(statement)
            self._conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                   [("schema_version", str(SCHEMA_VERSION)), ("revision", "0"),
                                    ("created_at", now())])
            if bootstrap:
                tx = Tx(self._conn, "bootstrap", None, self.box)
                inventory = default_inventory()
                for kind in inventory.KINDS:
                    for obj in getattr(inventory, kind):
                        tx.put(kind, obj.name, obj.to_data())
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self.created = bootstrap

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self, request_id: str, *, after_row: Callable[[int], None] | None = None) -> Iterator[Tx]:
        """One atomic write. `after_row(n)` runs after the n-th row is written, inside the transaction."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._conn, request_id, after_row, self.box)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store for a read-decide-write sequence (reads and the transaction see one state)."""
        with self._lock:
            yield

    # --- reads -------------------------------------------------------------------------------------------------

    def get(self, kind: str, key: str, parent: str = "") -> Row | None:
        with self._lock:
            return Tx(self._conn, "", None, self.box).get(kind, key, parent)

    def list(self, kind: str, parent: str | None = None) -> list[Row]:
        """Objects of a kind in creation order (all parents, or one)."""
        sql = f"SELECT {_COLUMNS} FROM objects WHERE kind = ?"
        args: tuple = (kind,)
        if parent is not None:
            sql += " AND parent = ?"
            args = (kind, parent)
        with self._lock:
            return [_row(r, self.box) for r in self._conn.execute(sql + " ORDER BY rowid", args)]

    def scan(self, kind: str, parent: str | None = None) -> list[tuple[str, str, Row | ValueError]]:
        """`(parent, key, row)` of a kind's objects in creation order (all parents, or one), in one query. A row
        whose JSON no longer parses (edited on disk) comes as the ValueError instead of the Row, so that it costs
        its readers only itself — `list` would fail for all."""
        sql, args = f"SELECT {_COLUMNS} FROM objects WHERE kind = ?", (kind,)
        if parent is not None:
            sql, args = sql + " AND parent = ?", (kind, parent)
        with self._lock:
            raw = self._conn.execute(sql + " ORDER BY rowid", args).fetchall()
        out: list[tuple[str, str, Row | ValueError]] = []
        for values in raw:
            try:
                out.append((values[1], values[2], _row(values, self.box)))
            except ValueError as exc:
                out.append((values[1], values[2], exc))
        return out

    def all_rows(self) -> list[Row]:
        with self._lock:
            return [_row(r, self.box) for r in self._conn.execute(f"SELECT {_COLUMNS} FROM objects ORDER BY rowid")]

    def events(self, *, service: str | None = None, object: str | None = None, since: int = 0,
               limit: int | None = None) -> list[dict[str, Any]]:
        """Events in order, of one service (its own, its deployments' and its traffic's) or one object path."""
        sql = ("SELECT seq, time, object, action, request_id, generation, resource_version, changes, uid, type, "
               "reason, message, count, first_time FROM events WHERE seq > ?")
        args: list[Any] = [since]
        if service is not None:
            sql += " AND service = ?"
            args.append(service)
        if object is not None:
            sql += " AND object = ?"
            args.append(object)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [{"seq": seq, "time": t, "object": obj, "action": action, "request_id": rid, "generation": gen,
                 "resource_version": str(rv), "changes": json.loads(changes), "uid": uid, "type": type_,
                 "reason": reason, "message": message, "count": count, "first_time": first or t}
                for seq, t, obj, action, rid, gen, rv, changes, uid, type_, reason, message, count, first in rows]

    def last_seq(self) -> int:
        """The newest event's seq (0 for an empty log): where a follower starts."""
        with self._lock:
            (seq,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        return int(seq)

    def revision(self) -> int:
        with self._lock:
            (rev,) = self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(rev)

    def dump(self) -> dict[str, list[tuple]]:
        """Every row of every table (a logical dump, for tests and debugging)."""
        with self._lock:
            return _dump(self._conn)

    # --- the controllers' seam ---------------------------------------------------------------------------------

    def write_status(self, kind: str, key: str, patch: dict[str, Any], *, parent: str = "",
                     request_id: str = "reconciler", event: str | None = "status") -> Row | None:
        """Merge `patch` into an object's status (controllers: reconciler, autoscaler, gateway). Never the spec.

        E.g. a deployment: `{"observed_generation": 3, "roles": {...}, "conditions": [...]}`; a service:
        `{"gateway_url": ..., "gateway_urls": {...}}`. `event=None` records no event (frequent updates)."""
        with self.transaction(request_id) as tx:
            return tx.patch_status(kind, key, patch, parent=parent, action=event)


    def record_event(self, kind: str, key: str, reason: str, message: str, *, parent: str = "",
                     type: str = "Normal", request_id: str = "platform") -> dict[str, Any]:
        """Append a runtime event about an object (`kind`/`key`/`parent` as in `get`) or about the platform itself
        (`kind="platform"`, e.g. `key="gateway"`: object path `platform/gateway`, no service). The object's uid and
        generation are stamped when it exists; the resource version is the store's current revision (an event
        changes no object). `reason` is CamelCase (`Started`, `BackOff`, `GatewayRestarted`); `message` is for a
        person and must never carry a secret — nor numbers that change on every repeat (pids, ports, delays), so that
        repeats aggregate into one row with a `count` (module doc). Returns the event as `events()` lists it."""
        if type not in EVENT_TYPES:
            raise ValueError(f"event type {type!r} is not one of {EVENT_TYPES}")
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]{0,63}", reason):
            raise ValueError(f"event reason {reason!r} is not a CamelCase word")
        at = now()
        cutoff = (datetime.now(UTC) - timedelta(seconds=EVENT_AGGREGATION_S)).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        with self.transaction(request_id) as tx:
            row = None if kind == PLATFORM else tx.get(kind, key, parent)
            path = f"{PLATFORM}/{key}" if kind == PLATFORM else object_path(kind, key, parent)
            service = "" if kind == PLATFORM else owning_service(kind, key, parent)
            uid = row.uid if row else ""
            (rev,) = self._conn.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
            count, first = 1, at
            repeat = self._conn.execute(
                "SELECT seq, count, first_time, time FROM events WHERE object = ? AND reason = ? AND action = 'event' "
                "AND type = ? AND message = ? AND uid = ? AND time >= ? ORDER BY seq DESC LIMIT 1",
                (path, reason, type, message, uid, cutoff)).fetchone()
            if repeat is not None:  # aggregated: the earlier row moves to the end of the log with its count
                old_seq, old_count, old_first, old_time = repeat
                count, first = old_count + 1, old_first or old_time
                self._conn.execute("DELETE FROM events WHERE seq = ?", (old_seq,))
            cur = self._conn.execute(
                "INSERT INTO events (time, object, service, uid, action, request_id, generation, resource_version, "
                "changes, type, reason, message, count, first_time) "
                "VALUES (?, ?, ?, ?, 'event', ?, ?, ?, '[]', ?, ?, ?, ?, ?)",
                (at, path, service, uid, request_id, row.generation if row else 0, int(rev), type, reason, message,
                 count, first))
            seq = cur.lastrowid
        return self.events(since=seq - 1, limit=1)[0]


def dump_database(path: Path | str) -> dict[str, list[tuple]]:
    """A logical dump of a platform database opened read-only from outside the server (tests compare two)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return _dump(conn)
    finally:
        conn.close()


def _dump(conn: sqlite3.Connection) -> dict[str, list[tuple]]:
    tables = [t for (t,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


__all__ = ["DB_NAME", "EVENT_AGGREGATION_S", "EVENT_TYPES", "PLATFORM", "Change", "Row", "Store", "Tx", "changed_paths", "dump_database"]
