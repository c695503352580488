"""The meter: instance-seconds and cost per service, deployment, role, queue, billing type and compute spec, charged
by the one price model (`inferstack.plan.prices`, the plan's too), kept in SQLite (`meter.db` in the data dir, mode
0600) so it survives restarts.

A *line* is one role's use of one queue for one compute spec, keyed by the service's uid (a service deleted and
created again under the same key starts a new bill). It holds totals so far — reserved slot-seconds, running
instance-seconds, charged instance-seconds and cost — and the open interval: the current `Charge` (slots reserved,
instances running), its price per instance-hour and since when. `observe(usage)` closes every open interval at the
clock's now (count × seconds, at that interval's price) and opens the new ones. A report adds the open intervals up
to the time of reading, so "cost so far" is exact at any moment and "per hour now" is the open intervals' rate.

After a crash the open intervals are closed at the first observation after the restart: instances outlive the
platform by design (they are re-adopted), so they are charged for the time it was down. A graceful stop stops the
instances (`close`: nothing runs from then on) but not the prepaid reservations: held capacity is paid per period
whatever its use, so the slots deployments reserve stay charged while the platform is stopped.

The clock is wall time (unix seconds), injectable; a whole platform under test reads it from the file named by
`INFERSTACK_CLOCK_FILE` (tests only), so the cost of a scripted peak can be computed by hand."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from inferstack.plan.prices import SECONDS_PER_HOUR, Charge

CLOCK_FILE_ENV = "INFERSTACK_CLOCK_FILE"
METER_DB = "meter.db"
FLUSH_S = 10.0  # an unchanged usage is still written this often, so a crash loses at most this much

_SCHEMA = """
CREATE TABLE IF NOT EXISTS lines (
    service_uid TEXT NOT NULL,
    service TEXT NOT NULL,
    deployment TEXT NOT NULL,
    role TEXT NOT NULL,
    queue TEXT NOT NULL,
    spec TEXT NOT NULL,
    lender TEXT NOT NULL DEFAULT '',
    billing TEXT NOT NULL,
    reserved_s REAL NOT NULL DEFAULT 0,
    running_s REAL NOT NULL DEFAULT 0,
    charged_s REAL NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    price REAL NOT NULL DEFAULT 0,
    since REAL NOT NULL,
    first REAL NOT NULL,
    PRIMARY KEY (service_uid, deployment, role, queue, spec)
)
"""


def clock_from_env(environ: Mapping[str, str] = os.environ) -> Callable[[], float]:
    """Wall time, or (tests) the number in the file `INFERSTACK_CLOCK_FILE` names."""
    path = environ.get(CLOCK_FILE_ENV)
    if not path:
        return time.time
    return lambda: float(Path(path).read_text(encoding="utf-8").strip())


@dataclass(frozen=True)
class Line:
    """What a line is about."""

    service_uid: str
    service: str
    deployment: str
    role: str
    queue: str
    spec: str
    lender: str = ""  # the queue lent idle capacity: the instances borrow it

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.service_uid, self.deployment, self.role, self.queue, self.spec)


@dataclass(frozen=True)
class Use:
    """A line's use now: the charge and its price per instance-hour."""

    charge: Charge
    price: float


class Meter:
    """Instance-seconds and cost in `meter.db`; see the module docstring. Thread-safe."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time, flush_s: float = FLUSH_S):
        self.path = Path(path)
        self.clock = clock
        self.flush_s = flush_s
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute(_SCHEMA)
        self._last: dict[tuple, tuple[Line, Use]] | None = None
        self._flushed = -float("inf")
        self._closed = False

    def close(self) -> None:
        """The instances stopped: nothing runs from now on, reserved slots stay held. Then close the database (once;
        a closed meter observes nothing)."""
        if self._closed:
            return
        held = {line: Use(replace(use.charge, running=0), use.price) for line, use in (self._last or {}).values()
                if use.charge.reserved}
        self.observe(held, force=True)
        with self._lock:
            self._closed = True
            self._conn.close()

    def observe(self, usage: Mapping[Line, Use], *, force: bool = False) -> None:
        """The use of every line from now on (lines not named use nothing). Written when it changed, or once per
        `flush_s`."""
        if self._closed:
            return
        current = {line.key: (line, use) for line, use in usage.items()}
        now = self.clock()
        if not force and current == self._last and now - self._flushed < self.flush_s:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "UPDATE lines SET "
                    "reserved_s = reserved_s + reserved * max(?1 - since, 0), "
                    "running_s = running_s + running * max(?1 - since, 0), "
                    "charged_s = charged_s + max(reserved, running) * max(?1 - since, 0), "
                    "cost = cost + max(reserved, running) * max(?1 - since, 0) * price / ?2, "
                    "reserved = 0, running = 0, since = ?1 WHERE reserved > 0 OR running > 0", (now, SECONDS_PER_HOUR))
                for line, use in current.values():
                    self._conn.execute(
                        "INSERT INTO lines (service_uid, service, deployment, role, queue, spec, lender, billing, "
                        "reserved, running, price, since, first) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (service_uid, deployment, role, queue, spec) DO UPDATE SET "
                        "service = excluded.service, lender = excluded.lender, billing = excluded.billing, "
                        "reserved = excluded.reserved, running = excluded.running, price = excluded.price, "
                        "since = excluded.since",
                        (line.service_uid, line.service, line.deployment, line.role, line.queue, line.spec,
                         line.lender, use.charge.billing, use.charge.reserved, use.charge.running, use.price, now, now))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        self._last, self._flushed = current, now

    def bills(self) -> list[dict[str, Any]]:
        """Every service the meter has charged (deleted ones too: their bills stay), oldest first:
        `{service_uid, service, first}`."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT service_uid, service, min(first) FROM lines GROUP BY service_uid ORDER BY min(first), "
                "service_uid").fetchall()
        return [{"service_uid": uid, "service": service, "first": first} for uid, service, first in rows]

    def report(self, service_uid: str) -> dict[str, Any]:
        """Cost so far and per hour now of one service (by uid), per line and in total, at the clock's now."""
        now = self.clock()
        with self._lock:
            rows = self._conn.execute(
                "SELECT deployment, role, queue, spec, lender, billing, reserved_s, running_s, charged_s, cost, "
                "reserved, running, price, since, first FROM lines WHERE service_uid = ? "
                "ORDER BY first, deployment, role, queue, spec", (service_uid,)).fetchall()
        lines, total, per_hour, by_billing = [], 0.0, 0.0, {}
        for (deployment, role, queue, spec, lender, billing, reserved_s, running_s, charged_s, cost, reserved,
             running, price, since, _first) in rows:
            open_s = max(now - since, 0.0)
            charged = max(reserved, running)
            cost += charged * open_s * price / SECONDS_PER_HOUR
            rate = charged * price
            kind = "idle" if lender else billing
            total += cost
            per_hour += rate
            by_billing[kind] = by_billing.get(kind, 0.0) + cost
            lines.append({
                "deployment": deployment, "role": role, "queue": queue, "compute_spec": spec,
                "borrowed_from": lender or None, "billing": billing, "price_per_instance_hour": price,
                "instance_seconds": round(running_s + running * open_s, 3),
                "reserved_slot_seconds": round(reserved_s + reserved * open_s, 3),
                "charged_instance_seconds": round(charged_s + charged * open_s, 3),
                "cost": round(cost, 6), "running_now": running, "reserved_now": reserved,
                "per_hour_now": round(rate, 6),
            })
        return {"cost": round(total, 6), "per_hour": round(per_hour, 6),
                "by_billing": {k: round(v, 6) for k, v in sorted(by_billing.items())}, "lines": lines, "at": now}


__all__ = ["CLOCK_FILE_ENV", "METER_DB", "Line", "Meter", "Use", "clock_from_env"]
