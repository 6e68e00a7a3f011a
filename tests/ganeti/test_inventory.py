"""`gnt-storage volume list|show` on the Ganeti master of the bed: owners as real Ganeti names them.

A running KVM instance with two userspace disks (the second named), whose QEMU opens them through librbd: the
listing names the instance and each disk by index and name, the primary node as where they are mapped (QEMU's
watch, named by Ganeti's node address) and as their exclusive opener; an image no Ganeti disk owns is an orphan.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import rbd

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti import checks
from tests.ganeti.checks import POOL

INSTANCE = "inv-us.gcb.test"


@pytest.fixture(scope="module")
def running(testbed: Testbed, ceph_admin: Config) -> Iterator[list[str]]:
    """The instance, started on node0; its volume names in disk order."""
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=256M,provider=rbd,access=userspace",
                "--disk", "1:size=128M,provider=rbd,access=userspace,name=data", "-o", "noop+default",
                "--hypervisor", "kvm", "-B", "memory=128M", "-n", testbed.node_names[0], "--no-ip-check",
                "--no-name-check", INSTANCE)
    try:
        yield checks.volumes(testbed, INSTANCE)
    finally:
        testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", INSTANCE],
                    check=False)


@pytest.fixture()
def orphan(ceph_admin: Config) -> Iterator[str]:
    name = f"inv-orphan-{uuid.uuid4().hex[:8]}"
    with Session(ceph_admin) as s, s.ioctx(POOL) as io:
        rbd.RBD().create(io, name, 16 * 1024 * 1024, old_format=False)
    yield name
    with Session(ceph_admin) as s, s.ioctx(POOL) as io:
        rbd.RBD().remove(io, name)


def test_owner_disk_mapped_open(testbed: Testbed, running: list[str], orphan: str) -> None:
    vol0, vol1 = running
    node0 = testbed.node_names[0]
    out = testbed.run(0, [testbed.gnt_storage, "volume", "list", "--separator=|", "--no-headers", "-o",
                          "name,instance,disk,size,access,mapped,open", vol0, vol1, orphan]).stdout
    assert sorted(out.splitlines()) == sorted([f"{vol0}|{INSTANCE}|0|256|userspace|{node0}|{node0}:exclusive",
                                               f"{vol1}|{INSTANCE}|1 (data)|128|userspace|{node0}|{node0}:exclusive",
                                               f"{orphan}|-|-|16|-|-|-"])
    listed = testbed.run(0, [testbed.gnt_storage, "volume", "list", "--instance", INSTANCE, "-o", "name"]).stdout
    assert listed.split() == ["Name", *sorted([vol0, vol1])]
    shown = testbed.run(0, [testbed.gnt_storage, "volume", "show", f"{INSTANCE}:data"]).stdout
    assert f"Name:      {vol1}\n" in shown and f"Mapped:    {node0}\n" in shown
    res = testbed.run(0, [testbed.gnt_storage, "volume", "show", orphan]).stdout
    assert "Instance:  - (orphan: it records no Ganeti disk" in res
