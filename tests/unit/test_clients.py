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
    assert Process.parse(f"{me.name}.0") == me
    assert not clients.gone(me)


def test_a_finished_process_is_gone() -> None:
    proc = subprocess.Popen(["true"])
    proc.wait()
    me = clients.me()
    assert clients.gone(Process(me.boot, me.pidns, proc.pid, me.start))


def test_a_reused_pid_is_another_process() -> None:
    """Same pid, another start time: the recorded process is gone even though the pid is taken."""
    me = clients.me()
    assert clients.gone(Process(me.boot, me.pidns, me.pid, me.start + 1))


def test_a_zombie_is_gone() -> None:
    proc = subprocess.Popen(["true"])  # not reaped: a zombie, whose sockets are closed
    deadline = time.monotonic() + 10
    while procs.state(proc.pid) != "Z":
        assert time.monotonic() < deadline, "`true` did not end within 10 s"
        time.sleep(0.01)
    with open(f"/proc/{proc.pid}/stat") as fh:
        start = int(fh.read().rsplit(")", 1)[1].split()[19])
    try:
        me = clients.me()
        assert clients.gone(Process(me.boot, me.pidns, proc.pid, start))
    finally:
        proc.wait()


def test_another_pid_namespace_is_never_judged() -> None:
    """A record written in another PID namespace (a container, a test-bed node) sharing run_dir: its pid
    means nothing here, so it is left alone even when that pid is free here."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    me = clients.me()
    assert not clients.gone(Process(me.boot, me.pidns + 1, proc.pid, 0))


def test_another_host_is_never_judged() -> None:
    """Every host's first PID namespace has the same inode: a record of another host sharing run_dir
    (NFS, a bind mount) is told apart by its boot_id, and left alone even when its pid is free here."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    me = clients.me()
    assert not clients.gone(Process("0" * 32, me.pidns, proc.pid, 0))


def test_only_record_names_parse() -> None:
    boot = "a" * 32
    assert Process.parse(f"{boot}.4026531836.12.345.0") == Process(boot, 4026531836, 12, 345)
    for other in (f".{boot}.4026531836.12.345.0.1234.abcd.tmp", f"{boot}.1.2.3", "a.b.c.d.e",
                  f"{boot}-x.1.2.3.4", ""):
        assert Process.parse(other) is None


def test_a_call_tries_only_a_few_dead_records(tmp_path, monkeypatch) -> None:
    """Many dead workers (an agent crash): each call releases at most MAX_RELEASES, the rest wait."""
    me = clients.me()
    os.makedirs(tmp_path / clients.DIR)
    proc = subprocess.Popen(["true"])
    proc.wait()
    for n in range(5):
        (tmp_path / clients.DIR / f"{me.boot}.{me.pidns}.{proc.pid}.{n}.0").write_text(
            '{"fsid": "f", "addr": "127.0.0.1:0/1", "pool": "rbd", "image": "v"}')
    tried = []
    monkeypatch.setattr(clients, "_release", lambda session, record: tried.append(record))
    assert len(clients.release_dead(str(tmp_path), None, "f")) == clients.MAX_RELEASES  # type: ignore[arg-type]
    assert len(tried) == clients.MAX_RELEASES and len(os.listdir(tmp_path / clients.DIR)) == 5 - len(tried)


def test_other_clusters_records_use_no_try(tmp_path, monkeypatch) -> None:
    """Records of another cluster sharing run_dir are skipped without using up a call's tries, wherever
    they come in the directory's order (here first: listdir's order is the file system's)."""
    me = clients.me()
    os.makedirs(tmp_path / clients.DIR)
    proc = subprocess.Popen(["true"])
    proc.wait()
    for n, fsid in enumerate(("other",) * 4 + ("f",)):
        (tmp_path / clients.DIR / f"{me.boot}.{me.pidns}.{proc.pid}.{n}.0").write_text(
            f'{{"fsid": "{fsid}", "addr": "127.0.0.1:0/{n + 1}", "pool": "rbd", "image": "v"}}')
    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda d: sorted(listdir(d)))  # the other cluster's first
    monkeypatch.setattr(clients, "_release", lambda session, record: None)
    assert clients.release_dead(str(tmp_path), None, "f") == ["127.0.0.1:0/5"]  # type: ignore[arg-type]
    assert len(listdir(tmp_path / clients.DIR)) == 4  # the other cluster's, left for its own calls
