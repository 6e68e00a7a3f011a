"""What is running: processes whose command line names a path (see ganeti_ceph.procs)."""

from __future__ import annotations

from ganeti_ceph import procs


def processes_using(path: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose argv mentions `path`."""
    return [(pid, " ".join(procs.cmdline(pid))) for pid in procs.find(substring=path)]
