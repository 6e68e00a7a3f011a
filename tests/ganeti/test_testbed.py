"""The test bed is a working Ganeti cluster, and an RBD disk through our provider lives and dies in Ceph."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph import procs
from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed import netns
from testbed.ganeti import Testbed

MiB = 1024**2
VOL_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.ext\.disk0$")


def images(admin: Config) -> dict[str, int]:
    """Every image in the pool with its size in bytes, read as the admin."""
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as io:
        out = {}
        for name in rbd.RBD().list(io):
            with rbd.Image(io, name, read_only=True) as img:
                out[name] = img.size()
        return out


def volume_of(tb: Testbed, instance: str) -> str:
    """The ExtStorage volume name (VOL_NAME) Ganeti gave the instance's first disk."""
    info = tb.gnt("gnt-instance", "info", instance)
    match = re.search(r"logical_id: \['rbd', '([^']+)'\]", info)
    assert match, info
    return match.group(1)


def rbd_fuse_pids(tb: Testbed, index: int) -> list[int]:
    ns = netns.pidns(tb.holder(index).pid)
    return [p for p in netns.members(ns or "") if procs.cmdline(p)[:1] == ["rbd-fuse"]]


@pytest.fixture
def instance(testbed: Testbed) -> Iterator[str]:
    """A name for one test's instance, removed afterwards whatever happened."""
    name = f"inst{time.monotonic_ns() % 10**6}.gcb.test"
    yield name
    testbed.run(0, ["gnt-instance", "remove", "-f", "--ignore-failures", name], check=False)


def test_cluster_verify_passes(testbed: Testbed) -> None:
    res = testbed.run(0, ["gnt-cluster", "verify", "--ignore-errors=ENODESETUP"], check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # ENODESETUP (no /proc/sys/sysrq-trigger on this kernel) is the only finding tolerated.
    findings = [line for line in out.splitlines() if " - ERROR:" in line or " - WARNING:" in line]
    assert all("node setup error" in line for line in findings), findings


def test_cluster_verify_shows_ceph_trouble(testbed: Testbed, ceph_admin: Config) -> None:
    """With Ceph unhealthy (the noout flag set: HEALTH_WARN OSDMAP_FLAGS), gnt-cluster verify carries
    our hook's one Ceph line; healthy again, verify is clean again."""
    with Session(ceph_admin) as s:
        s.mon_command("osd set", key="noout")
    try:
        res = testbed.run(0, ["gnt-cluster", "verify", "--ignore-errors=ENODESETUP"], check=False, timeout=300)
        out = res.stdout + res.stderr
        assert "Ceph cluster" in out and "HEALTH_WARN" in out and "OSDMAP_FLAGS" in out, out
    finally:
        with Session(ceph_admin) as s:
            s.mon_command("osd unset", key="noout")
    deadline = time.monotonic() + 60
    while True:
        res = testbed.run(0, ["gnt-cluster", "verify", "--ignore-errors=ENODESETUP"], check=False, timeout=300)
        if res.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert res.returncode == 0, res.stdout + res.stderr


def test_both_nodes_are_in_the_cluster(testbed: Testbed) -> None:
    out = testbed.gnt("gnt-node", "list", "--no-headers", "-o", "name,master_candidate,offline")
    assert sorted(line.split()[0] for line in out.splitlines()) == sorted(testbed.node_names)
    assert testbed.gnt("gnt-cluster", "getmaster").strip() == testbed.master


def test_rbd_instance_lifecycle(testbed: Testbed, ceph_admin: Config, instance: str) -> None:
    node0 = testbed.node_names[0]
    started = time.monotonic()
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=256M,provider=rbd", "-o", "noop+default",
                "--hypervisor", "fake", "-B", "memory=128M", "-n", node0, "--no-ip-check", "--no-name-check",
                instance)
    print(f"gnt-instance add took {time.monotonic() - started:.1f} s")
    vol = volume_of(testbed, instance)
    assert VOL_NAME.match(vol), vol
    assert images(ceph_admin).get(vol) == 256 * MiB
    assert len(testbed.mappings(0)["loops"]) == 1, "a running instance has its disk mapped on its primary"
    assert testbed.mappings(1) == {"mounts": [], "loops": []}

    testbed.gnt("gnt-instance", "stop", instance)
    assert testbed.mappings(0) == {"mounts": [], "loops": []}, "shutdown detaches the disk"
    testbed.gnt("gnt-instance", "start", instance)
    assert len(testbed.mappings(0)["loops"]) == 1
    assert "running" in testbed.gnt("gnt-instance", "list", "--no-headers", "-o", "status", instance)

    testbed.gnt("gnt-instance", "remove", "-f", instance)
    assert vol not in images(ceph_admin)
    for index in range(len(testbed.nodes)):
        assert testbed.mappings(index) == {"mounts": [], "loops": []}
        assert rbd_fuse_pids(testbed, index) == []
    assert testbed.leaked_loops() == []


def test_live_migration_moves_the_mapping(testbed: Testbed, ceph_admin: Config, instance: str) -> None:
    node0, node1 = testbed.node_names[:2]
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=64M,provider=rbd", "-o", "noop+default",
                "--hypervisor", "fake", "-B", "memory=128M", "-n", node0, "--no-ip-check", "--no-name-check",
                instance)
    testbed.gnt("gnt-instance", "migrate", "-f", instance)
    assert testbed.gnt("gnt-instance", "list", "--no-headers", "-o", "pnode", instance).strip() == node1
    assert testbed.mappings(0) == {"mounts": [], "loops": []}, "the source unmaps after migration"
    assert len(testbed.mappings(1)["loops"]) == 1
    vol = volume_of(testbed, instance)
    testbed.gnt("gnt-instance", "remove", "-f", instance)
    assert vol not in images(ceph_admin)
    assert testbed.leaked_loops() == []
