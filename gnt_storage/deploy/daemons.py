"""Start and stop Ceph daemons we own, by pid file with the command line checked.

Without systemd (this machine kind, and many Ganeti nodes) daemons are run
directly; they daemonize and write `<run>/<type>.<id>.pid`. We only ever
signal a process whose command line names our own conf file, so a recycled
pid or another cluster's daemon is never touched.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from dataclasses import dataclass

from ganeti_ceph import procs, runner
from ganeti_ceph.errors import GanetiCephError

BINARIES = {"mon": "ceph-mon", "mgr": "ceph-mgr", "osd": "ceph-osd"}
KILL_WAIT = 60.0  # seconds for a SIGKILLed daemon to be gone (its threads too)


@dataclass(frozen=True)
class Daemon:
    """One daemon of a cluster: type (mon, mgr, osd) and id."""

    type: str
    id: str

    @property
    def name(self) -> str:
        return f"{self.type}.{self.id}"

    @property
    def binary(self) -> str:
        return BINARIES[self.type]

    def argv(self, conf: str, user: str = "") -> list[str]:
        """Started as `user` (Ceph drops root itself) when given, else as root."""
        return [self.binary, "-c", conf, "-i", self.id, *(("--setuser", user, "--setgroup", user) if user else ())]


def pid_path(run_dir: str, daemon: Daemon, prefix: str = "") -> str:
    """`<run>/<type>.<id>.pid`; Ceph's default layout prefixes the cluster name (`ceph-`)."""
    return os.path.join(run_dir, f"{prefix}{daemon.name}.pid")


def is_ours(argv: list[str], daemon: Daemon, conf: str) -> bool:
    """True when argv is `daemon` started with our conf (pure, unit-tested)."""
    if not argv or os.path.basename(argv[0]) != daemon.binary:
        return False
    pairs = list(itertools.pairwise(argv))
    return ("-c", conf) in pairs and ("-i", daemon.id) in pairs


def running_pid(run_dir: str, daemon: Daemon, conf: str, prefix: str = "") -> int | None:
    """The pid of our running daemon, or None (no pid file, dead, or not ours)."""
    try:
        with open(pid_path(run_dir, daemon, prefix)) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return pid if procs.alive(pid) and is_ours(procs.cmdline(pid), daemon, conf) else None


def start(daemons: list[Daemon], conf: str, log_dir: str, env: dict[str, str], user: str = "") -> None:
    """Start daemons in parallel; each forks into the background itself."""
    children = []
    for d in daemons:
        with open(os.path.join(log_dir, f"{d.name}.start.log"), "ab") as log:
            children.append((d, subprocess.Popen(d.argv(conf, user), stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, env=env, start_new_session=True)))
    failed = [d.name for d, p in children if p.wait(timeout=120) != 0]
    if failed:
        raise GanetiCephError(
            f"daemon(s) {', '.join(failed)} failed to start; see {log_dir}/<name>.start.log and <name>.log"
        )


def stop(daemons: list[Daemon], run_dir: str, conf: str, grace: float = 10.0, prefix: str = "") -> list[str]:
    """SIGTERM our running daemons, SIGKILL what is left after `grace` seconds.

    Returns the names of the daemons that were running.
    """
    pids = {d.name: pid for d in daemons if (pid := running_pid(run_dir, d, conf, prefix))}
    for pid in pids.values():
        _signal(pid, signal.SIGTERM)
    runner.until(time.monotonic() + grace, lambda: not any(procs.alive(p) for p in pids.values()), interval=0.05)
    for pid in pids.values():
        if procs.alive(pid):
            _signal(pid, signal.SIGKILL)
    left = runner.until(time.monotonic() + KILL_WAIT, lambda: [n for n, p in pids.items() if not exited(p)],
                        lambda left: not left)
    if left:
        raise GanetiCephError(f"{', '.join(left)} still exiting {KILL_WAIT:.0f} s after SIGKILL; try again")
    return sorted(pids)


def exited(pid: int) -> bool:
    """Gone, or a zombie whose every thread has exited: only then are its
    sockets and files closed (a zombie leader's threads may still hold them)."""
    if procs.state(pid) in (None, "Z"):
        try:
            return len(os.listdir(f"/proc/{pid}/task")) <= 1
        except OSError:
            return True
    return False


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
