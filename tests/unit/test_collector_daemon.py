"""The HTTP API, the Prometheus rendering and the verify hook, without a cluster."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from data_collector import cli, daemon, gather, metrics, verify_hook, worker
from ganeti_ceph import config, procs
from ganeti_ceph.config import Config, Timeouts
from tests.conftest import REPO
from tests.unit.test_collector_formats import parse_prometheus, validate_report
from tests.unit.test_collector_report import REAL, make
from tests.unit.test_log_reopen import ppid


class StubReports:
    def __init__(self, rep: dict[str, Any]) -> None:
        self.rep = rep

    def latest(self) -> dict[str, Any]:
        return self.rep


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    srv = daemon.Server(("127.0.0.1", 0), StubReports(make("osd-down")[0]))  # type: ignore[arg-type]
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv.server_address[:2]
    srv.shutdown()
    srv.server_close()


def request(addr: tuple[str, int], path: str, method: str = "GET", timeout: float = 5) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    conn.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
    res = conn.getresponse()
    body = res.read().decode()
    conn.close()
    return res.status, res.getheader("Content-Type") or "", body


def test_mond_api(server: tuple[str, int]) -> None:
    assert request(server, "/")[::2] == (200, "[1]")
    assert json.loads(request(server, "/1/list/collectors")[2]) == [["ceph", "storage", 1]]
    status, ctype, body = request(server, "/1/report/storage/ceph")
    assert status == 200 and ctype == "application/json"
    validate_report(json.loads(body))
    everything = json.loads(request(server, "/1/report/all")[2])
    assert len(everything) == 1 and everything[0] == json.loads(body)
    assert request(server, "/1/report/storage/lv")[0] == 404 and request(server, "/nope")[0] == 404


def test_metrics_endpoint(server: tuple[str, int]) -> None:
    status, ctype, body = request(server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    fams = parse_prometheus(body)
    assert fams["ganeti_ceph_status_code"]["samples"][()] == 1
    assert fams["ceph_osd_up"]["samples"][(("ceph_daemon", "osd.1"),)] == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW"])
def test_read_only(server: tuple[str, int], method: str) -> None:
    assert request(server, "/1/report/all", method)[0] == 405


@pytest.mark.parametrize("name", sorted(REAL))
def test_metrics_of_every_situation_parse(name: str) -> None:
    rep = make(name)[0]
    fams = parse_prometheus(metrics.render(rep))
    assert fams["ganeti_ceph_status_code"]["samples"][()] == rep["data"]["status"]["code"]
    assert all(f["type"] in ("gauge", "counter") and f["help"] for f in fams.values())
    if name != "no-quorum":
        pools = fams["ceph_pool_bytes_used"]["samples"]
        assert {dict(k)["pool_id"] for k in pools} == {str(p["id"]) for p in rep["data"]["pools"]}
        checks = fams.get("ganeti_ceph_health_check", {"samples": {}})["samples"]
        assert {dict(k)["name"] for k in checks} == {c["name"] for c in rep["data"]["health"]["checks"]}


def test_metric_label_values_are_escaped() -> None:
    rep = make("healthy")[0]
    rep["data"]["node"]["affected_instances"] = ['we"ird\\name\n']
    fams = parse_prometheus(metrics.render(rep))
    assert fams["ganeti_ceph_instance_affected"]["samples"] == {(("ganeti_instance", 'we"ird\\name\n'),): 1}


def test_default_bind(tmp_path: Path) -> None:
    (tmp_path / "ssconf_node_primary_ips").write_text("node0.gcb.test 198.51.100.10\nnode1.gcb.test 198.51.100.11\n")
    assert daemon.default_bind(str(tmp_path), {"node1.gcb.test"}) == "198.51.100.11"
    assert daemon.default_bind(str(tmp_path), {"node1"}) == "198.51.100.11"
    assert daemon.default_bind(str(tmp_path), {"elsewhere"}) == "127.0.0.1"
    assert daemon.default_bind(str(tmp_path / "none"), {"node1"}) == "127.0.0.1"


# -- the verify hook ----------------------------------------------------------------------

@pytest.mark.parametrize("name,line,rc", [
    ("healthy", "Ceph cluster ceph: HEALTH_OK (code 0: healthy)", 0),
    ("osd-down", "Ceph cluster ceph: HEALTH_WARN (code 1: self-healing: OSD_DOWN: 1 osds down [osd.1]; "
                 "PG_DEGRADED: Degraded data redundancy: 1/2 objects degraded (50.000%), 1 pg degraded)", 1),
    ("osd-full", "Ceph cluster ceph: HEALTH_ERR (code 4: needs an admin: OSD_FULL: ", 1),
    ("no-quorum", "Ceph cluster ceph: HEALTH_UNKNOWN (code 2: cluster could not be asked: no mon quorum", 1),
])
def test_hook_line(name: str, line: str, rc: int, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    rep = make(name)[0]
    monkeypatch.setattr(verify_hook, "from_daemon", lambda *a, **k: rep)
    assert verify_hook.main([]) == rc
    out = capsys.readouterr().out
    assert out.startswith(line) and out.count("\n") == 1
    assert verify_hook.main(["--exit-zero"]) == 0


def test_hook_without_config_or_daemon(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                       tmp_path: Path) -> None:
    monkeypatch.setattr(verify_hook, "from_daemon", lambda *a, **k: None)
    assert verify_hook.main(["--config", str(tmp_path / "absent.yaml")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("Ceph cluster ceph: HEALTH_UNKNOWN (code 2: cluster could not be asked: config file")


def test_hook_asks_no_daemon_when_given_a_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    asked = []
    monkeypatch.setattr(verify_hook, "from_daemon", lambda *a, **k: asked.append(a))
    verify_hook.main(["--config", str(tmp_path / "absent.yaml")])
    assert asked == [] and capsys.readouterr().out


def test_hook_reads_a_daemon(server: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    rep = verify_hook.from_daemon(*server, timeout=2)
    assert rep is not None and rep["data"]["status"]["code"] == 1
    assert verify_hook.from_daemon("127.0.0.1", 9, timeout=1) is None


def test_collector_command_with_a_bad_config(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["--config", str(tmp_path / "absent.yaml")]) == 0
    out, err = capsys.readouterr()
    rep = json.loads(out)
    validate_report(rep)
    assert rep["data"]["status"]["code"] == 2 and "not found" in err


# -- refreshing: the collector process (data_collector/worker.py) --------------------------------------

def test_backoff_lets_a_one_off_failure_restart_at_once_and_slows_a_crash_loop() -> None:
    assert [worker.backoff(n) for n in range(1, 6)] == [0, 1, 2, 4, 8]
    assert worker.backoff(100) == worker.MAX_BACKOFF_S


def test_pause_serves_even_a_slow_refresh_for_an_interval() -> None:
    assert daemon.pause(5, 1.5) == 3.5
    assert daemon.pause(5, 16) == 5


def test_the_collector_process_gets_the_daemons_config() -> None:
    """What the child parses from the first line is the config the daemon holds (timeouts capped)."""
    cfg = gather.with_timeout(Config(conf="/etc/ceph/x.conf", keyring="/etc/ceph/k", cluster="c1", node="n1",
                                     timeouts=Timeouts(connect=10, mon_op=7)), 3)
    assert config.parse(yaml.safe_load(config.dump(cfg)), cfg.source) == cfg


def collector_processes(parent: int) -> list[int]:
    return [p for p in procs.find(arg=worker.MODULE) if ppid(p) == parent]


def collector_process(parent: int) -> int:
    """The one collector process of `parent`, waited for: a child's argv shows in /proc only once its
    exec is done, a moment after Popen returns."""
    until(lambda: len(collector_processes(parent)) == 1, 10)
    return collector_processes(parent)[0]


def test_a_dead_collector_process_is_reported_then_replaced(tmp_path: Path) -> None:
    """A real collector process, against a cluster that is not there (so its reports are code 2 too,
    saying why): killed, it is reported and replaced; killed again at once, it is replaced after a backoff."""
    cfg = Config(conf=str(tmp_path / "absent.conf"), keyring=str(tmp_path / "absent.keyring"), cluster="c1",
                 timeouts=Timeouts(1, 1))
    sup = worker.Supervisor(cfg)
    try:
        assert "collector process" not in message(sup.report())  # the child's own code-2 report
        for failures, then in ((1, "restarted"), (2, "restarting it in")):
            child = collector_process(os.getpid())
            os.kill(child, signal.SIGKILL)
            rep = sup.report()
            validate_report(rep)
            assert rep["data"]["status"]["code"] == 2
            assert f"the collector process {child} died (SIGKILL)" in message(rep) and then in message(rep)
            assert ("failures in a row" in message(rep)) == (failures > 1)
            assert procs.state(child) is None  # reaped
        assert not collector_processes(os.getpid()) and "restarting it in" in message(sup.report())
        until(lambda: "collector process" not in message(sup.report()), 10)  # the backoff is 1 s
        collector_process(os.getpid())
    finally:
        sup.close()
    assert not collector_processes(os.getpid())


def message(rep: dict[str, Any]) -> str:
    return rep["data"]["status"]["message"]


def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_bounded_gives_up_on_a_hung_call() -> None:
    started = time.monotonic()
    out = gather.bounded(lambda: time.sleep(3) or {}, 0.2, lambda why: {"why": why})
    assert out == {"why": "no answer within 0 s"} and time.monotonic() - started < 1
    assert gather.bounded(lambda: {"ok": 1}, 1, lambda why: {}) == {"ok": 1}


def test_timeout_caps_the_config() -> None:
    cfg = Config(conf="c", keyring="k", timeouts=Timeouts(connect=10, mon_op=2, osd_op=30))
    capped = gather.with_timeout(cfg, 5)
    assert (capped.timeouts.connect, capped.timeouts.mon_op, capped.timeouts.osd_op) == (5, 2, 30)
    assert gather.with_timeout(cfg, None) is cfg and gather.deadline(capped) == 5 + 4 + 2


# -- the real daemon under idle connections (defect 9) --------------------------------------

def read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers, then Content-Length bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@contextlib.contextmanager
def real_daemon(tmp_path: Path, *options: str, nofile: int = 256) -> Iterator[tuple[str, int]]:
    """`ganeti-ceph-mond run` as its own process, with a small fd limit (as a busy node would hit),
    against a cluster that is not there (it then serves code-2 reports)."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = tmp_path / "c.yaml"
    conf.write_text(f"conf: {tmp_path}/absent.conf\nkeyring: {tmp_path}/absent.keyring\n")
    argv = [sys.executable, "-m", "data_collector.daemon", "run", "--bind", "127.0.0.1", "--port", str(port),
            "--config", str(conf), "--interval", "1", "--timeout", "1", "--pidfile", str(tmp_path / "mond.pid"),
            *options]
    limit = (nofile, nofile)
    with open(tmp_path / "mond.log", "ab") as log:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=REPO,
                                 preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
    try:
        until(lambda: (tmp_path / "mond.pid").exists() or child.poll() is not None, 10)
        assert child.poll() is None, (tmp_path / "mond.log").read_text()
        yield "127.0.0.1", port
    finally:
        left = collector_processes(child.pid)
        child.terminate()
        child.wait(10)
        until(lambda: not [c for c in left if procs.alive(c)], 10)  # the daemon ends its collector process


def test_a_killed_daemon_leaves_no_collector_process(tmp_path: Path) -> None:
    """SIGKILL gives the daemon no chance to stop its child: the child sees it gone and ends."""
    with real_daemon(tmp_path):
        pid = int((tmp_path / "mond.pid").read_text())
        child = collector_process(pid)
        os.kill(pid, signal.SIGKILL)
        until(lambda: not procs.alive(child), 10)


def test_idle_connections_do_not_exhaust_the_daemon(tmp_path: Path) -> None:
    """More idle connections (silent, and kept alive after a request) than the daemon has fds:
    /metrics still answers within its bound, with the default limits."""
    bound = 5.0
    with real_daemon(tmp_path) as addr:
        idle: list[socket.socket] = []
        try:
            for i in range(300):
                try:
                    s = socket.create_connection(addr, timeout=1)
                except OSError:
                    break  # not accepted any more: the daemon is exhausted
                idle.append(s)
                if i % 2:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    with contextlib.suppress(OSError):
                        read_response(s)  # keep-alive: the connection stays open, idle
            started = time.monotonic()
            try:
                status, _, body = request(addr, "/metrics", timeout=bound)
            except OSError as exc:
                pytest.fail(f"/metrics not answered within {bound} s after {len(idle)} idle connections: {exc!r}")
            assert status == 200 and "ganeti_ceph_status_code 2" in body
            assert time.monotonic() - started < bound
        finally:
            for s in idle:
                s.close()


def test_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    with real_daemon(tmp_path, "--idle-timeout", "1") as addr:
        silent = socket.create_connection(addr, timeout=5)
        kept = socket.create_connection(addr, timeout=5)
        kept.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(kept).endswith(b"[1]")
        for s in (silent, kept):
            started = time.monotonic()
            try:
                assert s.recv(1) == b""  # closed by the daemon, within its idle timeout
            except TimeoutError:
                pytest.fail("the daemon kept an idle connection open past 5 s (its idle timeout is 1 s)")
            assert time.monotonic() - started < 5
            s.close()


def test_connection_limit_sheds_the_oldest_idle_connection(tmp_path: Path) -> None:
    with real_daemon(tmp_path, "--max-connections", "4") as addr:
        first = [socket.create_connection(addr, timeout=5) for _ in range(4)]
        time.sleep(0.2)
        newest = socket.create_connection(addr, timeout=5)
        assert first[0].recv(1) == b""  # the oldest idle one made room
        newest.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(newest).endswith(b"[1]")
        for s in (*first, newest):
            s.close()
