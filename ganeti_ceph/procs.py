"""Looking at processes through /proc: state, argv, and who uses a path.

Shared by the daemon manager, the mappers and the tests. Zombies count as
dead: on hosts whose init does not reap (containers, our CI), they linger.
"""

from __future__ import annotations

import os


def state(pid: int) -> str | None:
    """The one-letter state (R, S, Z...) or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    s = state(pid)
    return s is not None and s != "Z"


def cmdline(pid: int | str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def find(binary: str | None = None, arg: str | None = None, substring: str | None = None) -> list[int]:
    """Live pids whose argv[0] is `binary`, holding `arg` exactly, or mentioning `substring`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = cmdline(entry)
        if not argv or (binary and os.path.basename(argv[0]) != binary) or (arg and arg not in argv):
            continue
        if substring and not any(substring in a for a in argv):
            continue
        if alive(int(entry)):
            found.append(int(entry))
    return found
