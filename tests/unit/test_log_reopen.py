"""Both daemons under logrotate, as real processes without Ceph: the log is renamed (as logrotate
does), SIGHUP makes the daemon reopen it, and what it logs next lands in the new file while it
keeps serving; nothing keeps the rotated file open (the agent's workers included)."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from data_collector import daemon as mond
from extstorage import agent
from extstorage.client import ask_agent, frame
from ganeti_ceph import procs, runner
from tests.conftest import REPO

T = TypeVar("T")
WAIT_S = 15.0  # bound on each wait below; a pass never needs it


def wait_for(probe: Callable[[], T], what: str) -> T:
    got = runner.until(time.monotonic() + WAIT_S, probe, interval=0.05)
    assert got, f"not within {WAIT_S:.0f} s: {what}"
    return got


def fd_target(pid: int, fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    return ""


def holders(path: Path) -> list[int]:
    """Processes with `path` open (by any fd)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd")):
                found.append(int(pid))
    return found


def children(pid: int) -> list[int]:
    return [c for c in procs.find(substring="extstorage.agent_worker") if ppid(c) == pid]


def ppid(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError), open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])
    return 0


def rotate(pid: int, log: Path) -> Path:
    """What logrotate does (without copytruncate): rename, then the postrotate signal."""
    old = log.with_name(log.name + ".1")
    log.rename(old)
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: log.exists() and "log reopened on SIGHUP" in log.read_text(), f"{log} reopened")
    return old


def test_the_agent_reopens_its_log_and_its_workers_leave_the_old_one(tmp_path: Path) -> None:
    sock, pidfile, log = str(tmp_path / "agent.sock"), str(tmp_path / "agent.pid"), tmp_path / "agent.log"
    assert agent.start(sock, pidfile, str(log)) == 0
    try:
        pid = agent.running_pid(pidfile)
        assert pid
        wait_for(lambda: "serving" in log.read_text(), "the banner in the log")  # printed just after the pid file
        before = wait_for(lambda: children(pid), "the agent's spare worker")
        assert all(fd_target(w, 2) == str(log) for w in before)  # workers inherit the agent's stderr

        old = rotate(pid, log)
        assert fd_target(pid, 1) == fd_target(pid, 2) == str(log)
        # The idle workers were retired and a new one started on the new file: none holds the old one.
        wait_for(lambda: not holders(old), f"nothing holding {old} (held by {holders(old)})")
        assert wait_for(lambda: children(pid), "a worker after the reopen")
        assert all(fd_target(w, 2) == str(log) for w in children(pid))

        with socket.socket(socket.AF_UNIX) as s:  # a call cut short: the agent logs it
            s.connect(sock)
            s.sendall(frame(b"verify")[:-2])
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            s.recv(1)
        wait_for(lambda: "dropped a malformed or late request" in log.read_text(), "the call logged in the new file")
        assert "dropped" not in old.read_text()
        env = {"GANETI_CEPH_CONFIG": str(tmp_path / "missing.yaml"), "VOL_NAME": "v"}
        code, _, err = ask_agent(sock, "verify", env) or (None, "", "no answer")
        assert code != 0 and err.startswith("rbd verify: config file "), err  # still serves, through a worker
    finally:
        agent.stop_agent(pidfile)


@contextlib.contextmanager
def collector(tmp_path: Path, *log: str) -> Iterator[tuple[int, int]]:
    """`ganeti-ceph-mond` against a cluster that is not there (it serves code-2 reports): started with
    `start` when given a log, else in the foreground with `run` and stderr to a file."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"conf: {tmp_path}/absent.conf\nkeyring: {tmp_path}/absent.keyring\n")
    pidfile = str(tmp_path / "mond.pid")
    args = ["--bind", "127.0.0.1", "--port", str(port), "--config", str(yaml), "--pidfile", pidfile]
    child = None
    if log:
        assert mond.main(["start", *args, "--log", *log]) == 0
    else:
        with open(tmp_path / "stderr", "ab") as err:
            child = subprocess.Popen([sys.executable, "-m", "data_collector.daemon", "run", *args], cwd=REPO,
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        yield wait_for(lambda: mond.running_pid(pidfile), "the collector running"), port
    finally:
        mond.stop_daemon(pidfile)
        if child:
            child.wait(10)


def scrape(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    status = conn.getresponse().status
    conn.close()
    return status


def test_the_collector_reopens_its_log(tmp_path: Path) -> None:
    log = tmp_path / "mond.log"
    with collector(tmp_path, str(log)) as (pid, port):
        wait_for(lambda: "serving" in log.read_text(), "the banner in the log")
        assert scrape(port) == 200
        old = rotate(pid, log)
        assert fd_target(pid, 1) == fd_target(pid, 2) == str(log)
        assert not holders(old)
        assert "reopened" not in old.read_text()
        assert scrape(port) == 200


def test_sighup_without_a_log_file_does_not_stop_a_foreground_daemon(tmp_path: Path) -> None:
    with collector(tmp_path) as (pid, port):
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "no --log file to reopen" in (tmp_path / "stderr").read_text(), "SIGHUP answered")
        assert procs.alive(pid) and scrape(port) == 200


def test_the_unit_of_a_process_comes_from_its_cgroup() -> None:
    """`ganeti-ceph-setup install` restarts a unit-run agent through systemd, not as a detached one."""
    from ganeti_ceph.procs import unit_of_cgroup

    assert unit_of_cgroup("0::/system.slice/ganeti-ceph-agent.service\n") == "ganeti-ceph-agent.service"
    assert unit_of_cgroup("1:name=systemd:/system.slice/ganeti-ceph-agent.service\n0::/\n") == \
        "ganeti-ceph-agent.service"
    assert unit_of_cgroup("0::/user.slice/user-0.slice/session-3.scope\n") is None
    assert unit_of_cgroup("9:name=systemd:/\n0::/\n") is None
