"""Which processes are alive, for the claims between processes of :mod:`skembed._shared`: a
process is named by its pid and its start time (from /proc), so that a claim of a dead
process is recognised even after its pid was reused, and a zombie counts as dead."""

from __future__ import annotations

import os


def _stat(pid: int) -> tuple[str, str] | None:
    """Process ``pid``'s state letter and start time (clock ticks since boot) from
    /proc/<pid>/stat, or None where that cannot be read (no /proc, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _started(pid: int) -> str:
    """When process ``pid`` started, or "" where that cannot be read: with the pid, it names
    a process even after its pid is reused."""
    stat = _stat(pid)
    return "" if stat is None else stat[1]


def mark(pid: int) -> str:
    """The target of an entry claimed by process ``pid``: ``p<pid>-<start time>``."""
    return f"p{pid}-{_started(pid)}"


_DEAD = ("Z", "X", "x")  # zombie (killed, e.g. by the OOM killer, and not yet reaped), dead


def alive(claim: str) -> bool:
    """Whether the process that made a ``p<pid>-<start time>`` claim still runs: not when its
    pid is free, names a zombie (dead, only not yet reaped by its parent), or names another
    process that reused it (another start time). Where /proc is absent, whether the pid
    exists is all that is known."""
    pid_text, _, started = claim[1:].partition("-")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: /proc still tells its state
        pass
    stat = _stat(pid)
    if stat is None:
        return True
    state, start = stat
    return state not in _DEAD and (not started or start == started)
