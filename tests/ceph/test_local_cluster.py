"""The local cluster is real: daemons, cephx, pool caps, and `up`/`down` semantics."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time

import pytest
import rbd

from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.errors import CephError, CephUnavailable
from ganeti_ceph.session import Session
from tests.conftest import TEST_PORT, LocalCluster, gnt_storage
from tests.procs import processes_using


def test_status_is_healthy(local_cluster: LocalCluster) -> None:
    res = gnt_storage("local-cluster", "status", "--dir", local_cluster.dir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "health   HEALTH_OK" in res.stdout
    for name in ("mon.a", "mgr.x", "osd.0", "osd.1", "osd.2"):
        assert f"{name}" in res.stdout


def test_restricted_client_reads_back_what_it_wrote(local_cluster: LocalCluster) -> None:
    data = os.urandom(4 * 1024 * 1024)
    with Session(local_cluster.client) as s, s.ioctx() as ioctx:
        rbd.RBD().create(ioctx, "test-roundtrip", 64 * 1024 * 1024)
        try:
            with rbd.Image(ioctx, "test-roundtrip") as img:
                img.write(data, 1024 * 1024)
            with rbd.Image(ioctx, "test-roundtrip", read_only=True) as img:
                assert img.read(1024 * 1024, len(data)) == data
        finally:
            rbd.RBD().remove(ioctx, "test-roundtrip")


def test_restricted_client_is_refused_another_pool(local_cluster: LocalCluster) -> None:
    with (Session(local_cluster.client) as s, pytest.raises(CephError) as exc,
          s.ioctx("device_health_metrics") as io, s.errors("write")):
        io.write_full("intruder", b"x")
    assert exc.value.errno == 1 and "caps" in exc.value.message


def test_admin_sees_the_client_caps(local_cluster: LocalCluster) -> None:
    with Session(local_cluster.admin) as s:
        caps = s.mon_command("auth get", entity="client.ganeti")[0]["caps"]
    assert caps == {"mon": "profile rbd", "osd": "profile rbd pool=rbd",
                    "mgr": "profile rbd pool=rbd"}


def test_secrets_are_private_and_etc_ceph_untouched(local_cluster: LocalCluster) -> None:
    for name in ("ceph.client.admin.keyring", "ceph.client.ganeti.keyring"):
        mode = stat.S_IMODE(os.stat(os.path.join(local_cluster.dir, name)).st_mode)
        assert mode == 0o600, name
    etc = "/etc/ceph/ceph.conf"
    assert not os.path.exists(etc) or local_cluster.dir not in open(etc).read()  # noqa: SIM115


def test_up_on_running_cluster_is_a_noop(local_cluster: LocalCluster) -> None:
    with Session(local_cluster.admin) as s:
        fsid = s.fsid()
    res = gnt_storage("local-cluster", "up", "--dir", local_cluster.dir, "--port", str(TEST_PORT))
    assert res.returncode == 0
    assert "already running" in res.stderr and fsid in res.stderr


def test_unreachable_monitors_fail_within_the_timeout(tmp_path) -> None:
    conf = tmp_path / "ceph.conf"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf.write_text(f"[global]\nmon_host = v1:127.0.0.1:{port}\n")
    keyring = tmp_path / "k"
    keyring.write_text("[client.admin]\n\tkey = AQAAAAAAAAAAABAAAQEBAQEBAQEBAQEBAQEBAQ==\n")
    cfg = Config(conf=str(conf), keyring=str(keyring), cluster="unreachable", timeouts=Timeouts(connect=2))
    started = time.monotonic()
    with pytest.raises(CephUnavailable) as exc, Session(cfg):
        pass
    assert time.monotonic() - started < 2 + 10  # the bound, with slack for a loaded machine
    assert "unreachable" in exc.value.message and "\n" not in exc.value.message


# -- bad input: one line, non-zero, nothing left running ---------------------

def _assert_fails_cleanly(res, needle: str, dir_: str) -> None:
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert lines[0].startswith("gnt-storage: ")
    assert processes_using(dir_) == []


def test_unwritable_dir(tmp_path) -> None:
    bad = "/proc/ganeti-ceph-test"
    _assert_fails_cleanly(gnt_storage("local-cluster", "up", "--dir", bad, "--port", "13600"), "not writable", bad)


def test_port_in_use(tmp_path) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 13650))
        s.listen()
        res = gnt_storage("local-cluster", "up", "--dir", str(tmp_path / "c"), "--port", "13600")
    _assert_fails_cleanly(res, "port 127.0.0.1:13650 is in use", str(tmp_path))


def test_ceph_packages_missing(tmp_path) -> None:
    res = gnt_storage("local-cluster", "up", "--dir", str(tmp_path / "c"), env={"PATH": str(tmp_path)})
    _assert_fails_cleanly(res, "Ceph is not installed", str(tmp_path))
    assert "apt-get install" in res.stderr


def test_foreign_nonempty_dir_is_refused(tmp_path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    res = gnt_storage("local-cluster", "up", "--dir", str(tmp_path), "--port", "13600")
    _assert_fails_cleanly(res, "not empty", str(tmp_path))
    assert (tmp_path / "precious.txt").read_text() == "mine"


# -- up over an existing cluster: restart, keep the data; wipe only when asked --
# These run on the session's cluster (one port range per test run); the
# --wipe test, which gives it a new identity, comes last in this module.

def _up(d: str, *extra: str) -> subprocess.CompletedProcess:
    return gnt_storage("local-cluster", "up", "--dir", d, "--port", str(TEST_PORT), *extra)


def _kill(d: str, *names: str) -> None:
    """SIGKILL the named daemons of the cluster in `d` (the host "crashed" under them)."""
    from gnt_storage.deploy import daemons, local

    for name in names:
        daemon = daemons.Daemon(*name.split("."))
        pid = daemons.running_pid(os.path.join(d, "run"), daemon, os.path.join(d, "ceph.conf"))
        assert pid, name
        os.kill(pid, signal.SIGKILL)
        while not daemons.exited(pid):
            time.sleep(0.05)
    assert not any(local.running(d, local.read_state(d))[n] for n in names)


def _write_image(client: Config, name: str) -> bytes:
    data = os.urandom(4 * 1024 * 1024)
    with Session(client) as s, s.ioctx() as ioctx:
        rbd.RBD().create(ioctx, name, 64 * 1024 * 1024)
        with rbd.Image(ioctx, name) as img:
            img.write(data, 0)
            img.flush()
    return data


def _image_data(client: Config, name: str) -> bytes:
    with Session(client) as s, s.ioctx() as ioctx, rbd.Image(ioctx, name, read_only=True) as img:
        return img.read(0, 4 * 1024 * 1024)


def _fsid(cfg: Config) -> str:
    with Session(cfg) as s:
        return s.fsid()


def test_up_restarts_stopped_daemons_and_keeps_the_data(local_cluster: LocalCluster) -> None:
    d, client = local_cluster.dir, local_cluster.client
    fsid = _fsid(local_cluster.admin)
    data = _write_image(client, "kept-across-restart")
    try:
        # One OSD and the mgr die: up restarts them from their stores.
        _kill(d, "osd.1", "mgr.x")
        again = _up(d)
        assert again.returncode == 0, again.stderr
        assert "restarting mgr.x, osd.1" in again.stderr and "data is kept" in again.stderr, again.stderr
        assert "HEALTH_OK" in again.stderr
        assert _image_data(client, "kept-across-restart") == data
        # Every daemon died (the host crashed): the same, the monitor included.
        _kill(d, "mon.a", "mgr.x", "osd.0", "osd.1", "osd.2")
        again = _up(d)
        assert again.returncode == 0, again.stderr
        status = gnt_storage("local-cluster", "status", "--dir", d)
        assert status.returncode == 0 and "health   HEALTH_OK" in status.stdout, status.stdout
        assert _image_data(client, "kept-across-restart") == data
        assert _fsid(local_cluster.admin) == fsid
    finally:
        with Session(client) as s, s.ioctx() as ioctx:
            rbd.RBD().remove(ioctx, "kept-across-restart")


def _fake_stopped_cluster(d, finished: bool) -> dict[str, float]:
    """The files of a stopped 1-OSD cluster (no daemon, no store); their mtimes."""
    d.mkdir()
    state = {"fsid": "f00", "port": TEST_PORT, "osds": 1, "pool": "rbd", "client": "ganeti"}
    (d / "local-cluster.json").write_text(json.dumps(state))
    (d / "ceph.conf").write_text("[global]\n")
    if finished:
        (d / "ganeti-ceph.yaml").write_text("conf: x\n")
    for sub in ("mon/a", "mgr/x", "osd/0"):
        (d / sub).mkdir(parents=True)
    (d / "osd/0/block").write_bytes(b"precious")
    return {str(p): p.stat().st_mtime for p in d.rglob("*")}


def test_up_over_an_unfinished_bring_up_refuses_without_wipe(tmp_path) -> None:
    d = tmp_path / "unfinished"
    before = _fake_stopped_cluster(d, finished=False)
    res = gnt_storage("local-cluster", "up", "--dir", str(d), "--port", str(TEST_PORT))
    _assert_fails_cleanly(res, "never finished its bring-up", str(d))
    assert "--wipe" in res.stderr
    assert {str(p): p.stat().st_mtime for p in d.rglob("*")} == before


def test_up_with_a_store_missing_refuses_without_wipe(tmp_path) -> None:
    d = tmp_path / "lost"
    before = _fake_stopped_cluster(d, finished=True)
    res = gnt_storage("local-cluster", "up", "--dir", str(d), "--port", str(TEST_PORT))
    _assert_fails_cleanly(res, "cannot restart mon.a, mgr.x, osd.0", str(d))
    assert "store missing" in res.stderr and "--wipe" in res.stderr
    assert {str(p): p.stat().st_mtime for p in d.rglob("*")} == before


def test_boot_epochs_tell_a_booted_osd_from_one_that_never_booted(local_cluster: LocalCluster) -> None:
    """What init-distributed-storage reads before it may redo an OSD store: only up_from 0 may be redone."""
    import uuid

    from gnt_storage.deploy.bootstrap import boot_epochs

    with Session(local_cluster.admin) as s:
        booted = boot_epochs(s)
        assert set(booted) == {"0", "1", "2"} and all(e > 0 for e in booted.values()), booted
        new = str(s.mon_command("osd new", uuid=str(uuid.uuid4()))["osdid"])
        try:
            assert boot_epochs(s)[new] == 0
        finally:
            s.mon_command("osd purge-new", id=int(new), yes_i_really_mean_it=True)
        assert new not in boot_epochs(s)


def test_up_with_wipe_starts_over(local_cluster: LocalCluster) -> None:
    """Last in this module: the session's cluster gets a new identity, healthy and empty."""
    d = local_cluster.dir
    fsid = _fsid(local_cluster.admin)
    _write_image(local_cluster.client, "gone-with-wipe")
    wiped = _up(d, "--wipe")
    assert wiped.returncode == 0, wiped.stderr
    assert f"--wipe: removing the cluster in {d} (fsid {fsid})" in wiped.stderr
    assert "HEALTH_OK" in wiped.stderr
    assert _fsid(local_cluster.admin) != fsid
    with Session(local_cluster.client) as s, s.ioctx() as ioctx:
        assert rbd.RBD().list(ioctx) == []
