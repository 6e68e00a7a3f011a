"""Dead-client records, pure parts: which records name a process proven gone (ganeti_ceph/rbd/clients.py).

Releasing blocklists an address, so a live client must never be judged dead:
not one of another PID namespace, not one whose pid lives on.
"""

from __future__ import annotations

import os
import subprocess
import time

from ganeti_ceph import procs
from ganeti_ceph.rbd import clients
from ganeti_ceph.rbd.clients import Process


def test_this_process_is_alive_and_its_name_parses_back() -> None:
    me = clients.me()
    assert me.pid == os.getpid() and me.start > 0
    assert Process.parse(me.name) == me
    assert not clients.gone(me)


def test_a_finished_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert clients.gone(Process(clients.me().pidns, proc.pid, clients.me().start))


def test_a_reused_pid_is_another_process() -> None:
    """Same pid, another start time: the recorded process is gone even though the pid is taken."""
    me = clients.me()
    assert clients.gone(Process(me.pidns, me.pid, me.start + 1))


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen(["true"])  # not reaped: a zombie, whose sockets are closed
    deadline = time.monotonic() + 10
    while procs.state(proc.pid) != "Z":
        assert time.monotonic() < deadline, "`true` did not end within 10 s"
        time.sleep(0.01)
    with open(f"/proc/{proc.pid}/stat") as fh:
        start = int(fh.read().rsplit(")", 1)[1].split()[19])
    try:
        assert clients.gone(Process(clients.me().pidns, proc.pid, start))
    finally:
        proc.wait()


def test_another_pid_namespace_is_never_judged() -> None:
    """A record written in another PID namespace (a container, a test-bed node) sharing run_dir: its pid
    means nothing here, so it is left alone even when that pid is free here."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not clients.gone(Process(clients.me().pidns + 1, proc.pid, 0))


def test_only_record_names_parse() -> None:
    assert Process.parse("4026531836-12-345") == Process(4026531836, 12, 345)
    for other in (".4026531836-12-345.1234.abcd.tmp", "12-345", "a-b-c", "1-2-3-4", ""):
        assert Process.parse(other) is None
