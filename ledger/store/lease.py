"""Leases: which process records a quantum right now, kept fresh while it runs.

A recorder takes its quantum's lease in the transaction that appends the
attempt's ``quantum_started`` (so two executors racing to start one quantum
serialise, and the second sees the first's lease), renews it from a timer
thread while the task runs, and releases it when it closes. Everyone else asks
the lease whether the latest attempt may still be running, on any host:
starting a new attempt and recovery's adopt / remove refuse while it is fresh.

The ``leases`` table is operational state, not provenance: it is mutable (one
row per quantum, updated in place), outside the hash chain, never ingested
into a central ledger, and a ledger without a lease row (written before leases
existed) falls back to the recorded host and pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._logging import get_logger
from ..errors import MalformedRowError
from ..events import utc_now
from .validate import is_time, is_uuid, show

if TYPE_CHECKING:
    from .log import EventLog, Transaction

__all__ = [
    "BLOCKING",
    "HOST_ENV",
    "INTERVAL_ENV",
    "TIMEOUT_ENV",
    "Lease",
    "LeaseHolder",
    "LeasePolicy",
    "Liveness",
    "all_leases",
    "holder_text",
    "latest_attempt",
    "liveness",
    "liveness_of",
    "pid_state",
    "process_token",
    "read_lease",
    "revoke",
    "take",
    "this_host",
]

_log = get_logger(__name__)

#: Whether the latest attempt of a quantum with no terminal event may still be running:
#: ``running`` (its lease is fresh), ``possibly still running`` (no lease; recorded on
#: this host and its pid is alive), ``dead`` (this host, its pid is gone or reused),
#: ``expired`` (its lease ran out: not renewed, on any host), ``closed`` (the recorder
#: closed without recording an end), ``unknown`` (no lease, another host).
Liveness = Literal["running", "possibly still running", "dead", "expired", "closed", "unknown"]
#: The states in which a new attempt and recovery's adopt / remove are refused.
BLOCKING: frozenset[str] = frozenset({"running", "possibly still running"})

#: Overrides the host name that recorded hosts are compared with (never the one
#: recorded): e.g. to check from a login node what a batch node recorded.
HOST_ENV = "QLEDGER_HOSTNAME"
INTERVAL_ENV = "QLEDGER_LEASE_INTERVAL"
TIMEOUT_ENV = "QLEDGER_LEASE_TIMEOUT"


def this_host() -> str:
    """The host name recorded hosts are compared with (``$QLEDGER_HOSTNAME`` overrides it)."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


def _boot_id() -> str | None:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return None


def process_token(pid: int | None = None) -> str | None:
    """``boot id/start time`` of a process on this host: a pid that was reused differs.

    None where ``/proc`` does not say (not Linux, or no such process).
    """
    boot = _boot_id()
    if boot is None:
        return None
    try:
        stat = Path(f"/proc/{pid or os.getpid()}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22, starttime (clock ticks)
    except (OSError, IndexError):
        return None
    return f"{boot}/{start}"


def pid_state(pid: int | None, token: str | None = None) -> Literal["alive", "dead", "unknown"]:
    """Whether process ``pid`` of this host lives (``token``: the one recorded for it)."""
    if type(pid) is not int or not 0 < pid < 2**31:
        return "unknown"  # none recorded, or no pid at all (a damaged or crafted row)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # it exists, under another user
    except OSError:
        return "unknown"
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return "dead"  # a zombie: exited, not yet reaped
    if token is not None:
        now = process_token(pid)
        if now is not None and now != token:
            return "dead"  # the pid was reused (or the host rebooted)
    return "alive"


@dataclass(frozen=True)
class LeasePolicy:
    """How often a recorder renews its lease, and how long a lease lasts unrenewed.

    The defaults (renew every 30 s, expire after 120 s) come from the
    environment when ``QLEDGER_LEASE_INTERVAL`` / ``QLEDGER_LEASE_TIMEOUT`` are
    set (seconds). A lease outlives a few missed renewals; a quantum whose
    process died on another host may start again once its lease expired.
    """

    interval: float = 30.0
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if not 0 < self.interval < self.timeout:
            raise ValueError(
                f"a lease needs 0 < interval < timeout, not interval={self.interval} "
                f"and timeout={self.timeout}"
            )

    @classmethod
    def from_env(cls) -> LeasePolicy:
        """The policy of ``$QLEDGER_LEASE_INTERVAL`` / ``$QLEDGER_LEASE_TIMEOUT``, or defaults."""
        values = {}
        for name, env in (("interval", INTERVAL_ENV), ("timeout", TIMEOUT_ENV)):
            text = os.environ.get(env)
            if text:
                try:
                    values[name] = float(text)
                except ValueError:
                    raise ValueError(f"${env} must be a number of seconds, not {text!r}") from None
        return cls(**values)


@dataclass(frozen=True)
class Lease:
    """One row of ``leases``: who records the quantum's latest attempt, until when."""

    quantum_id: str
    attempt: int
    host: str
    pid: int
    token: str | None
    started_at: str
    renewed_at: str
    expires_at: str
    released_at: str | None
    released_by: str | None


_LEASE_COLUMNS = (
    "quantum_id, attempt, host, pid, token, started_at, renewed_at, expires_at, "
    "released_at, released_by"
)
_SELECT = f"SELECT {_LEASE_COLUMNS} FROM leases WHERE quantum_id = ?"
_TAKE = (
    f"INSERT INTO leases ({_LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL) "
    "ON CONFLICT (quantum_id) DO UPDATE SET attempt = excluded.attempt, host = excluded.host, "
    "pid = excluded.pid, token = excluded.token, started_at = excluded.started_at, "
    "renewed_at = excluded.renewed_at, expires_at = excluded.expires_at, "
    "released_at = NULL, released_by = NULL"
)
_MINE = "quantum_id = ? AND attempt = ? AND pid = ? AND released_at IS NULL"
_RENEW = f"UPDATE leases SET renewed_at = ?, expires_at = ? WHERE {_MINE}"
_RELEASE = f"UPDATE leases SET released_at = ?, released_by = ? WHERE {_MINE}"
_REVOKE = (
    "UPDATE leases SET released_at = ?, released_by = ? "
    "WHERE quantum_id = ? AND attempt = ? AND released_at IS NULL"
)


def _problem(row: Sequence[Any]) -> str | None:
    """What is wrong with a ``leases`` row (no recorder writes it so), or None."""
    if len(row) != len(Lease.__dataclass_fields__):
        return f"it has {len(row)} columns"
    qid, attempt, host, pid, token, started, renewed, expires, released, by = row
    checks = (
        (is_uuid(qid), "quantum_id", qid),
        (type(attempt) is int and attempt >= 1, "attempt", attempt),
        (type(host) is str, "host", host),
        (type(pid) is int, "pid", pid),
        (token is None or type(token) is str, "token", token),
        (is_time(started), "started_at", started),
        (is_time(renewed), "renewed_at", renewed),
        (is_time(expires), "expires_at", expires),
        (released is None or is_time(released), "released_at", released),
        (by in (None, "end", "close", "recover"), "released_by", by),
    )
    for ok, name, value in checks:
        if not ok:
            return f"its {name} {show(value)} is not what a recorder writes"
    return None


def _lease(row: Sequence[Any], where: str) -> Lease:
    problem = _problem(row)
    if problem is not None:
        key = show(row[0]) if row else "?"
        raise MalformedRowError(
            f"{where}: the leases row of quantum {key}: {problem}; a lease is operational "
            "state, not provenance: delete that row (DELETE FROM leases WHERE quantum_id = "
            f"{key}) and the quantum is judged by its recorded host and pid"
        )
    return Lease(*row)


def read_lease(
    rows: Callable[[str, list[Any]], Any], quantum_id: str, where: str = "the ledger"
) -> Lease | None:
    """The lease row of one quantum, read with ``rows(sql, params)``, or None.

    Raises:
        MalformedRowError: the row holds values no recorder writes.
    """
    found = list(rows(_SELECT, [quantum_id]))
    return _lease(found[0], where) if found else None


def all_leases(
    rows: Callable[[str, list[Any]], Any], where: str = "the ledger"
) -> dict[str, Lease]:
    """Every lease row, by quantum id (`MalformedRowError` for a bad one)."""
    found = [_lease(r, where) for r in rows(f"SELECT {_LEASE_COLUMNS} FROM leases", [])]
    return {lease.quantum_id: lease for lease in found}


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def liveness(
    lease: Lease | None,
    attempt: int,
    started: tuple[str | None, int | None],
    *,
    now: str | None = None,
    here: str | None = None,
) -> Liveness:
    """Whether ``attempt`` (the latest, with no terminal event) may still be running.

    ``started``: the host and pid its ``quantum_started`` recorded, used when
    there is no lease for the attempt (a ledger from before leases).
    """
    now = now or utc_now()
    here = here or this_host()
    if lease is not None and lease.attempt == attempt:
        if lease.released_by in ("close", "end"):
            return "closed"
        if lease.host == here and pid_state(lease.pid, lease.token) == "dead":
            return "dead"
        if lease.released_at is None and lease.expires_at > now:
            return "running"
        return "expired"
    host, pid = started
    if host is not None and host == here:
        state = pid_state(pid)
        if state == "dead":
            return "dead"
        if state == "alive":
            return "possibly still running"
    return "unknown"


def _started(
    rows: Callable[[str, list[Any]], Any], quantum_id: str, attempt: int
) -> tuple[str | None, int | None]:
    """The host and pid the attempt's ``quantum_started`` recorded."""
    found = list(
        rows(
            "SELECT detail FROM events WHERE quantum_id = ? AND attempt = ? "
            "AND kind = 'quantum_started' ORDER BY quantum_seq DESC LIMIT 1",
            [quantum_id, attempt],
        )
    )
    for (detail,) in found:
        with contextlib.suppress(ValueError, TypeError):
            env = json.loads(detail) if detail else {}
            if isinstance(env, dict):
                pid = env.get("pid")
                return env.get("host"), pid if isinstance(pid, int) else None
    return None, None


def liveness_of(
    rows: Callable[[str, list[Any]], Any], quantum_id: str, attempt: int, where: str = "the ledger"
) -> tuple[Liveness, Lease | None, tuple[str | None, int | None]]:
    """The liveness of ``attempt`` (the latest, with no terminal event), its lease and start.

    ``rows(sql, params)`` reads inside a writer's transaction or a reader's
    connection. The start is the host and pid its ``quantum_started`` recorded.
    """
    lease = read_lease(rows, quantum_id, where)
    started = _started(rows, quantum_id, attempt)
    return liveness(lease, attempt, started), lease, started


def holder_text(
    attempt: int, state: Liveness, lease: Lease | None, started: tuple[str | None, int | None]
) -> str:
    """``is running: attempt 2 by pid 123 on node7, lease renewed at ..., expires at ...``."""
    if lease is not None and lease.attempt == attempt:
        return (
            f"is {state}: attempt {attempt} by pid {lease.pid} on {lease.host}, lease "
            f"renewed at {lease.renewed_at}, expires at {lease.expires_at}"
        )
    host, pid = started
    return f"is {state}: attempt {attempt} by pid {pid} on {host}, alive (no lease recorded)"


def latest_attempt(rows: Callable[[str, list[Any]], Any], quantum_id: str) -> tuple[int, bool]:
    """The latest attempt of a quantum (0: none yet) and whether it has a terminal event."""
    found = list(rows("SELECT MAX(attempt) FROM events WHERE quantum_id = ?", [quantum_id]))
    attempt = found[0][0] if found else 0
    if type(attempt) is not int or attempt < 1:
        return 0, False  # none yet (or a damaged row, which verify reports)
    ended = list(
        rows(
            "SELECT 1 FROM events WHERE quantum_id = ? AND attempt = ? "
            "AND kind IN ('quantum_succeeded', 'quantum_failed') LIMIT 1",
            [quantum_id, attempt],
        )
    )
    return attempt, bool(ended)


def take(tx: Transaction, quantum_id: str, attempt: int, policy: LeasePolicy) -> None:
    """Write this process's lease on ``attempt`` (inside the transaction that starts it)."""
    now = utc_now()
    tx.execute(
        _TAKE,
        [
            quantum_id,
            attempt,
            socket.gethostname(),
            os.getpid(),
            process_token(),
            now,
            now,
            _later(policy.timeout),
        ],
    )


def revoke(tx: Transaction, quantum_id: str, attempt: int) -> None:
    """Mark an attempt's lease as ended by recovery: a recorder presumed dead loses it."""
    tx.execute(_REVOKE, [utc_now(), "recover", quantum_id, attempt])


class LeaseHolder:
    """The lease of one attempt this process records: renewed by a timer, released at close.

    The timer thread renews through `EventLog.side_write` (its own short-lived
    connection), so it never touches the writer's held connection, its open
    transaction or a batch buffer. ``lost`` turns True if a renewal finds the
    lease no longer this process's (it expired and a new attempt or recovery
    took it).
    """

    def __init__(self, log: EventLog, quantum_id: str, attempt: int, policy: LeasePolicy) -> None:
        self.quantum_id = quantum_id
        self.attempt = attempt
        self.policy = policy
        self.lost = False
        self._log = log
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._logger = _log.bind(quantum_id=quantum_id, attempt=attempt)
        self._thread = threading.Thread(
            target=self._run, name=f"qledger-lease-{quantum_id[:8]}", daemon=True
        )
        self._thread.start()

    def renew(self) -> bool:
        """Push the expiry ``timeout`` ahead; False if the lease is no longer ours."""
        changed = self._log.side_write(
            _RENEW,
            [utc_now(), _later(self.policy.timeout), self.quantum_id, self.attempt, self._pid],
        )
        return changed == 1

    def _run(self) -> None:
        while not self._stop.wait(self.policy.interval):
            try:
                ours = self.renew()
            except Exception as e:  # keep trying: the lease lasts a few missed renewals
                self._logger.warning("lease_not_renewed", why=f"{type(e).__name__}: {e}")
                continue
            if not ours:
                self.lost = True
                self._logger.warning("lease_lost", ledger=self._log.where)
                return

    def stop(self) -> None:
        """Stop renewing (the lease then expires unless released)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def release(self, how: Literal["end", "close"]) -> None:
        """Stop renewing and mark the lease released: the attempt ended, or was closed."""
        self.stop()
        try:
            self._log.side_write(
                _RELEASE, [utc_now(), how, self.quantum_id, self.attempt, self._pid]
            )
        except Exception as e:  # the lease then simply expires
            self._logger.warning("lease_not_released", why=f"{type(e).__name__}: {e}")
