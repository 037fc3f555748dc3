"""Process bookkeeping that works across processes (``up`` and ``down`` are
different CLI invocations), so a process is identified by pid + start time
rather than by a Popen handle."""

from __future__ import annotations

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


def terminate(pid: int, started: str | None, timeout: float = 15.0) -> None:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``timeout``."""
    if not alive(pid, started):
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)  # pgid == pid: spawn() starts a new session
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not alive(pid, started):
                _kill_group_leftovers(pid)
                return
            time.sleep(0.05)


def _kill_group_leftovers(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it
