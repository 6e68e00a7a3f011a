"""The Ceph health collector against a real cluster with real faults.

A cluster of its own (3 mons, 3 OSDs; port GANETI_CEPH_COLLECTOR_PORT, default 13700,
and the daemon's GANETI_CEPH_COLLECTOR_MOND_PORT, default 13690; beside the session's
GANETI_CEPH_TEST_DIR): the faults here would disturb the session's shared cluster.
Tests run in file order; each one undoes its fault and waits for HEALTH_OK again, so
any one can run alone.
OSDs and mons are killed through their pid files (SIGKILL). A killed OSD on
this host is marked down at once (its peers' connections are refused), so
no `osd down` is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from data_collector import daemon, gather, worker
from ganeti_ceph import config, procs, runner
from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.rbd.mappers import Target, table
from ganeti_ceph.session import Session
from gnt_storage.deploy import daemons
from gnt_storage.deploy.daemons import Daemon
from gnt_storage.deploy.local import admin_config, child_env
from tests.conftest import BIN, TEST_DIR, gnt_storage
from tests.unit.test_collector_formats import parse_prometheus, validate_report
from tests.unit.test_log_reopen import ppid

DIR = f"{TEST_DIR}-collector"
PORT = int(os.environ.get("GANETI_CEPH_COLLECTOR_PORT", "13700"))
MOND_PORT = int(os.environ.get("GANETI_CEPH_COLLECTOR_MOND_PORT", "13690"))
TIMEOUT = 3.0  # the collector's cap on connect and each mon command
COLLECTOR = os.path.join(BIN, "ganeti-ceph-collector")
MOND = os.path.join(BIN, "ganeti-ceph-mond")


@dataclasses.dataclass(frozen=True)
class Cluster:
    dir: str
    yaml: str
    client: Config
    admin: Config

    def kill(self, name: str) -> None:
        with open(os.path.join(self.dir, "run", f"{name}.pid")) as fh:
            os.kill(int(fh.read()), signal.SIGKILL)

    def start(self, *names: str) -> None:
        ds = [Daemon(*n.split(".")) for n in names]
        daemons.start(ds, os.path.join(self.dir, "ceph.conf"), os.path.join(self.dir, "log"), child_env())


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    res = gnt_storage("local-cluster", "up", "--dir", DIR, "--port", str(PORT), "--mons", "3")
    if res.returncode != 0:
        gnt_storage("local-cluster", "down", "--dir", DIR)
        pytest.fail(f"local-cluster up --mons 3 failed:\n{res.stderr}")
    yaml = os.path.join(DIR, "ganeti-ceph.yaml")
    try:
        yield Cluster(DIR, yaml, config.load(yaml), admin_config(DIR, Timeouts(connect=5, mon_op=5, osd_op=10)))
    finally:
        res = gnt_storage("local-cluster", "down", "--dir", DIR)
        assert res.returncode == 0, res.stderr


@dataclasses.dataclass(frozen=True)
class Mond:
    url: str
    pid: int  # the daemon's, for the whole module: it must outlive every fault
    pidfile: Path
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


@pytest.fixture(scope="module")
def mond_daemon(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mond]:
    tmp = tmp_path_factory.mktemp("mond")
    argv = [MOND, "--port", str(MOND_PORT), "--config", cluster.yaml, "--interval", "1", "--timeout", str(TIMEOUT),
            "--pidfile", str(tmp / "mond.pid"), "--log", str(tmp / "mond.log")]
    subprocess.run([*argv[:1], "start", *argv[1:]], check=True, timeout=30)
    pid = daemon.running_pid(str(tmp / "mond.pid"))
    assert pid
    mond = Mond(f"http://127.0.0.1:{MOND_PORT}", pid, tmp / "mond.pid", tmp / "mond.log")
    try:
        yield mond
    finally:
        children = collector_processes(pid)
        subprocess.run([*argv[:1], "stop", *argv[1:]], check=True, timeout=30)
        assert subprocess.run([*argv[:1], "status", *argv[1:]], capture_output=True).returncode == 1
        assert not (tmp / "mond.pid").exists()
        assert not [c for c in children if procs.alive(c)], f"collector processes left after stop: {children}"


@pytest.fixture
def mond(mond_daemon: Mond, request: pytest.FixtureRequest) -> Iterator[str]:
    """The daemon's URL; after a test, a daemon found dead, or the test's failure, brings the tail
    of its log into the report (a CI failure then says why)."""
    failed = request.session.testsfailed
    yield mond_daemon.url
    if not procs.alive(mond_daemon.pid):
        pytest.fail(f"ganeti-ceph-mond (pid {mond_daemon.pid}) died; {mond_daemon.log} ends:\n{mond_daemon.tail()}",
                    pytrace=False)
    if request.session.testsfailed > failed:
        pytest.fail(f"(the failure above) {mond_daemon.log} ends:\n{mond_daemon.tail()}", pytrace=False)


def collector_processes(daemon_pid: int) -> list[int]:
    """The daemon's collector processes (data_collector/worker.py): one, but for a moment after a failure."""
    return [p for p in procs.find(arg=worker.MODULE) if ppid(p) == daemon_pid]


def collector_process(daemon_pid: int) -> int:
    found = runner.until(time.monotonic() + 30, lambda: collector_processes(daemon_pid), lambda f: len(f) == 1)
    assert len(found) == 1, f"not one collector process of ganeti-ceph-mond {daemon_pid}: {found}"
    return found[0]


def one_shot(cluster: Cluster, ganeti_run: str = gather.GANETI_RUN, cfg: Config | None = None) -> dict[str, Any]:
    collector = gather.Collector(gather.with_timeout(cfg or cluster.client, TIMEOUT), ganeti_run)
    try:
        rep = collector.report()
    finally:
        collector.close()
    validate_report(rep)
    return rep


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as res:
        assert res.status == 200
        body = res.read().decode()
    return json.loads(body) if res.headers["Content-Type"] == "application/json" else body


def wait_for(make: Callable[[], dict[str, Any]], ok: Callable[[dict[str, Any]], bool], timeout: float,
             what: str, every: float = 0.5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rep = make()
        if ok(rep):
            return rep
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {timeout:.0f} s; last status: {rep['data']['status']}")
        time.sleep(every)


def code(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda rep: rep["data"]["status"]["code"] == n


def healthy_again(cluster: Cluster) -> None:
    wait_for(lambda: one_shot(cluster), code(0), 60, "HEALTH_OK again")


def test_healthy_one_shot_command(cluster: Cluster) -> None:
    started = time.monotonic()
    res = subprocess.run([COLLECTOR, "--config", cluster.yaml], capture_output=True, text=True, timeout=30,
                         check=True)
    took = time.monotonic() - started
    rep = json.loads(res.stdout)
    validate_report(rep)
    d = rep["data"]
    assert d["status"] == {"code": 0, "message": "healthy"}, d["status"]
    assert d["mons"]["in_quorum"] == ["a", "b", "c"] and d["osds"]["up"] == 3
    assert {p["name"] for p in d["pools"]} >= {"rbd"}
    running = {x["name"]: x for x in d["node"]["daemons"]}
    assert set(running) == {"mon.a", "mon.b", "mon.c", "mgr.x", "osd.0", "osd.1", "osd.2"}
    assert all(x["running"] and x["rss_bytes"] > 10 * 2**20 for x in running.values())
    assert took < 5, f"one-shot took {took:.1f} s"
    assert parse_prometheus(subprocess.run([COLLECTOR, "--config", cluster.yaml, "--metrics"], capture_output=True,
                                           text=True, timeout=30, check=True).stdout)


def secrets(cluster: Cluster) -> list[str]:
    keys = []
    for path in (cluster.client.keyring, cluster.admin.keyring):
        with open(path) as fh:
            keys += [line.split("=", 1)[1].strip() for line in fh if line.strip().startswith("key")]
    assert keys
    return keys


def test_daemon_serves_mond_api_and_metrics(cluster: Cluster, mond: str) -> None:
    assert get(f"{mond}/") == [1]
    assert get(f"{mond}/1/list/collectors") == [["ceph", "storage", 1]]
    rep = wait_for(lambda: get(f"{mond}/1/report/storage/ceph"), code(0), 15, "a first report")
    assert get(f"{mond}/1/report/all")[0]["name"] == "ceph"
    fams = parse_prometheus(get(f"{mond}/metrics"))
    assert fams["ganeti_ceph_status_code"]["samples"][()] == 0
    assert sum(fams["ceph_osd_up"]["samples"].values()) == 3
    assert any(dict(k)["name"] == "rbd" for k in fams["ceph_pool_metadata"]["samples"])
    outputs = json.dumps(rep) + get(f"{mond}/metrics") + json.dumps(get(f"{mond}/1/report/all"))
    assert not [k for k in secrets(cluster) if k in outputs]
    req = urllib.request.Request(f"{mond}/1/report/all", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405


def test_daemon_binds_localhost_by_default(mond: str) -> None:
    import psutil

    assert daemon.default_bind() == "127.0.0.1"  # no ssconf here: not a Ganeti node
    pid = daemon.running_pid
    listening = [c.laddr for p in psutil.process_iter() if "data_collector.daemon" in " ".join(p.cmdline())
                 for c in p.connections() if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip == "127.0.0.1" for a in listening), (listening, pid)


def test_daemon_under_concurrent_load(mond: str) -> None:
    failures: list[str] = []
    times: list[float] = []

    def client(n: int) -> None:
        for i in range(50):
            path = ("/1/report/storage/ceph", "/1/report/all", "/metrics")[(n + i) % 3]
            t = time.monotonic()
            try:
                body = get(mond + path)
                if path != "/metrics":
                    validate_report(body if path.endswith("ceph") else body[0])
            except Exception as exc:  # collected, reported below
                failures.append(f"{path}: {exc!r}")
            times.append(time.monotonic() - t)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures[:5]
    assert len(times) == 400 and sorted(times)[len(times) // 2] < 0.1


def served(mond: str) -> dict[str, Any]:
    return get(f"{mond}/1/report/storage/ceph")


def message(rep: dict[str, Any]) -> str:
    return rep["data"]["status"]["message"]


@pytest.mark.parametrize("sig", [signal.SIGABRT, signal.SIGKILL], ids=lambda s: s.name)
def test_a_dead_collector_process_is_reported_and_replaced(mond: str, mond_daemon: Mond, sig: signal.Signals) -> None:
    """librados aborting (as Debian's 16.2 client did with two mons down) or the kernel killing the
    collector process ends only that child: the daemon serves on, says so, and starts a new one."""
    wait_for(lambda: served(mond), code(0), 15, "code 0 from the daemon")
    child = collector_process(mond_daemon.pid)
    os.kill(child, sig)
    # Served for one refresh interval (1 s here): asked often enough not to miss it.
    rep = wait_for(lambda: served(mond), code(2), 15, f"code 2 after the collector process got {sig.name}", 0.1)
    assert f"the collector process {child} died ({sig.name}); restarted" in message(rep), message(rep)
    validate_report(rep)
    assert parse_prometheus(get(f"{mond}/metrics"))["ganeti_ceph_up"]["samples"][()] == 0
    wait_for(lambda: served(mond), code(0), 30, "code 0 from the new collector process")
    assert daemon.running_pid(str(mond_daemon.pidfile)) == mond_daemon.pid
    assert collector_process(mond_daemon.pid) != child
    assert procs.state(child) is None  # reaped by the daemon, not left a zombie


def test_a_hung_collector_process_is_killed_at_its_bound(cluster: Cluster, mond: str, mond_daemon: Mond) -> None:
    """A collector process that stops answering (SIGSTOP: as a C call that ignores its timeouts) is
    killed once its exchange's bound has passed, reported as code 2, and replaced."""
    bound = gather.deadline(gather.with_timeout(cluster.client, TIMEOUT)) + worker.START_S
    wait_for(lambda: served(mond), code(0), 15, "code 0 from the daemon")
    child = collector_process(mond_daemon.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        rep = wait_for(lambda: served(mond), code(2), bound + 15, "code 2 from a stopped collector process", 0.1)
        assert f"the collector process {child} did not answer within {bound:.0f} s and was killed; restarted" \
               in message(rep), message(rep)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGCONT)
    wait_for(lambda: served(mond), code(0), 30, "code 0 from the new collector process")
    assert daemon.running_pid(str(mond_daemon.pidfile)) == mond_daemon.pid
    assert procs.state(child) is None


def test_osd_down_is_self_healing_and_names_the_osd(cluster: Cluster, mond: str, tmp_path: Any) -> None:
    fsid = one_shot(cluster)["data"]["cluster"]["fsid"]
    # This node as Ganeti and our mapper would leave it: instance web's disk 0 mapped from rbd/web-disk0.
    dev = tmp_path / "dev-loop9"
    dev.write_text("")
    (tmp_path / "ganeti" / "instance-disks").mkdir(parents=True)
    os.symlink(dev, tmp_path / "ganeti" / "instance-disks" / "web:0")
    table.publish(str(tmp_path / "map"), Target(fsid, "rbd", "web-disk0"), str(dev))
    cfg = dataclasses.replace(cluster.client, run_dir=str(tmp_path / "map"))
    cluster.kill("osd.1")
    try:
        # PG states follow the OSD map a moment later (mgr stats): then the pool is degraded.
        rep = wait_for(lambda: one_shot(cluster, str(tmp_path / "ganeti"), cfg),
                       lambda r: code(1)(r) and r["data"]["node"]["affected_instances"] != [], 30, "code 1")
        d = rep["data"]
        assert "osd.1" in d["status"]["message"] and d["osds"]["down"] == ["osd.1"], d["status"]
        assert {x["name"]: x["running"] for x in d["node"]["daemons"]}["osd.1"] is False
        assert d["node"]["mapped_devices"] == [{"pool": "rbd", "image": "web-disk0", "device": str(dev),
                                                "in_use": True}]
        assert d["node"]["affected_instances"] == ["web"]
        assert "instances affected on this node: web" in d["status"]["message"]
        served = wait_for(lambda: get(f"{mond}/1/report/storage/ceph"), code(1), 15, "code 1 from the daemon")
        assert "osd.1" in served["data"]["status"]["message"]
    finally:
        cluster.start("osd.1")
    healthy_again(cluster)


def test_pool_over_quota_needs_an_admin_and_names_the_pool(cluster: Cluster) -> None:
    with Session(cluster.admin) as s:
        s.mon_command("osd pool create", pool="quota", pg_num=4, pgp_num=4, pool_type="replicated")
        try:
            s.mon_command("osd pool application enable", pool="quota", app="rbd", yes_i_really_mean_it=True)
            s.mon_command("osd pool set-quota", pool="quota", field="max_objects", val="3")
            with s.ioctx("quota") as io:
                for i in range(6):  # the quota binds once the mgr's stats catch up: some writes pass
                    io.write_full(f"o{i}", b"x" * 4096)
            # The new pool's PGs may first count as unavailable (code 4 too) until they peer.
            rep = wait_for(lambda: one_shot(cluster), lambda r: code(4)(r) and "pool quota" in message(r), 30,
                           "code 4 naming the pool quota")
            pool = {p["name"]: p for p in rep["data"]["pools"]}["quota"]
            assert pool["state"] == "unavailable" and pool["quota_max_objects"] == 3 and pool["free_objects"] == 0
        finally:
            s.mon_command("osd pool rm", pool="quota", pool2="quota", yes_i_really_really_mean_it=True)
    healthy_again(cluster)


def test_one_mon_down_puts_quorum_at_risk(cluster: Cluster) -> None:
    cluster.kill("mon.c")
    try:
        # The leader holds a new election once its lease to mon.c times out (~10 s). Ceph's own
        # MON_DOWN check is held back for the first minute after mkfs: the quorum itself tells.
        rep = wait_for(lambda: one_shot(cluster), code(4), 40, "mon.c out of quorum")
        assert "mon.c" in rep["data"]["status"]["message"] and rep["data"]["mons"]["quorum_at_risk"]
        assert rep["data"]["mons"]["out_of_quorum"] == ["c"]
    finally:
        cluster.start("mon.c")
    healthy_again(cluster)


def test_two_mons_down_is_unknown_within_the_timeout(cluster: Cluster, mond: str, mond_daemon: Mond) -> None:
    wait_for(lambda: get(f"{mond}/1/report/storage/ceph"), code(0), 15, "code 0 from the daemon")
    cluster.kill("mon.b")
    cluster.kill("mon.c")
    try:
        def command() -> dict[str, Any]:
            started = time.monotonic()
            res = subprocess.run([COLLECTOR, "--config", cluster.yaml, "--timeout", str(TIMEOUT)],
                                 capture_output=True, text=True, timeout=60, check=True)
            took = time.monotonic() - started
            assert took < TIMEOUT + 3, f"one report took {took:.1f} s"  # connect timeout + process start
            rep = json.loads(res.stdout)
            validate_report(rep)
            return rep

        # The leader keeps answering from its lease for ~10 s before it knows it is alone.
        rep = wait_for(command, code(2), 30, "code 2 from the command")
        assert "could not be asked" in rep["data"]["status"]["message"]
        served = wait_for(lambda: get(f"{mond}/1/report/storage/ceph"), code(2), 30, "code 2 from the daemon")
        assert "could not be asked" in served["data"]["status"]["message"]
        assert parse_prometheus(get(f"{mond}/metrics"))["ganeti_ceph_up"]["samples"][()] == 0
    finally:
        cluster.start("mon.b", "mon.c")
    healthy_again(cluster)
    wait_for(lambda: get(f"{mond}/1/report/storage/ceph"), code(0), 30, "the daemon back at code 0")
    # The same daemon: librados hunting for a mon (which crashed Debian's 16.2 client) ends no more
    # than a collector process.
    assert daemon.running_pid(str(mond_daemon.pidfile)) == mond_daemon.pid
