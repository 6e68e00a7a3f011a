"""What is running: Ceph daemons (or any process) whose command line names a path."""

from __future__ import annotations

import os


def processes_using(path: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose argv mentions `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if path in argv:
            found.append((int(entry), argv.strip()))
    return found
