"""Process bookkeeping that works across processes (``up`` and ``down`` are
different CLI invocations), so a process is identified by pid + start time
rather than by a Popen handle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; it is wrapped in parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """Kernel start time of ``pid``; guards against killing a recycled pid."""
    stat = _proc_stat(pid)
    return stat[19] if stat else None


def alive(pid: int, started: str | None = None) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        return False
    if stat[0] == "Z":  # exited, only waiting for its parent to reap it
        return False
    return started is None or stat[19] == started


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``args`` in its own session/process group, output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def terminate_all(procs: list[tuple[int, str | None]], timeout: float = 15.0) -> list[int]:
    """SIGTERM the process group of each (pid, start_time), SIGKILL what is
    left after ``timeout``; all at once, so their shutdowns overlap.
    Returns the pids still alive afterwards (should be none)."""
    pending = [(pid, started) for pid, started in procs if alive(pid, started)]
    ours = [pid for pid, _ in pending]  # verified by start time: safe to signal their groups
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid, _ in pending:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)  # pgid == pid: spawn() starts a new session
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            time.sleep(0.05)
            for pid, _ in pending:
                _reap(pid)
            pending = [(pid, started) for pid, started in pending if alive(pid, started)]
        if not pending:
            break
    for pid in ours:
        _kill_group_leftovers(pid)  # e.g. children of a leader that exited on SIGTERM
    return [pid for pid, _ in pending]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: init reaps it
        os.waitpid(pid, os.WNOHANG)


def _kill_group_leftovers(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
