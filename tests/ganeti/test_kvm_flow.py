"""A KVM instance on RBD through real Ganeti, step by step, with Ceph and QEMU checked after each.

userspace access (QEMU's own librbd): add, grow-disk online (QEMU sees the
size: our disk-grow hook), hot-add and hot-remove a disk, export through a
snapshot, rename, live migration there and back, failover, remove. The
disks use virtio-scsi: with no guest OS, only a SCSI unplug completes
(machine-facts: an ACPI PCI unplug waits for the guest forever).
"""

from __future__ import annotations

import time

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed import qemu
from testbed.ganeti import Testbed
from tests.ganeti.test_testbed import images

MIB = 1024 * 1024
HV = "kvm:disk_type=scsi-hd,scsi_controller_type=virtio-scsi-pci"


def snapshots_and_meta(admin: Config, vol: str) -> tuple[list[str], dict[str, str]]:
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as io, rbd.Image(io, vol, read_only=True) as img:
        return [x["name"] for x in img.list_snaps()], dict(img.metadata_list())


def pnode(tb: Testbed, inst: str) -> int:
    name = tb.gnt("gnt-instance", "list", "--no-headers", "-o", "pnode", inst).strip()
    return tb.node_names.index(name)


def rbd_drives(tb: Testbed, inst: str) -> dict[str, int]:
    """{rbd:pool/image:id=user: size} of the running QEMU, wherever it runs."""
    return {name: size for _, name, size in qemu.drives(tb, pnode(tb, inst), inst) if name.startswith("rbd:")}


def no_leaks(tb: Testbed) -> None:
    assert tb.leaked_loops() == []


@pytest.fixture
def inst(testbed: Testbed) -> str:
    name = f"kvm{time.monotonic_ns() % 10**6}.gcb.test"
    yield name
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", name], check=False)


def test_userspace_kvm_instance_through_its_life(testbed: Testbed, ceph_admin: Config, inst: str) -> None:
    tb = testbed
    before = set(images(ceph_admin))
    tb.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=256M,provider=rbd,access=userspace", "-H", HV,
           "-o", "noop+default", "-B", "memory=128M", "-n", tb.node_names[0], "--no-ip-check", "--no-name-check",
           inst)
    (vol,) = set(images(ceph_admin)) - before
    uri = f"rbd:rbd/{vol}:id=ganeti"
    assert rbd_drives(tb, inst) == {uri: 256 * MIB}  # QEMU's own librbd, nothing mapped
    no_leaks(tb)

    tb.gnt("gnt-instance", "grow-disk", inst, "0", "128M")
    assert images(ceph_admin)[vol] == 384 * MIB
    assert rbd_drives(tb, inst) == {uri: 384 * MIB}  # told by the disk-grow hook

    tb.gnt("gnt-instance", "modify", "--hotplug", "-f", "--disk", "add:size=64M,provider=rbd,access=userspace", inst)
    (vol1,) = set(images(ceph_admin)) - before - {vol}
    assert rbd_drives(tb, inst) == {uri: 384 * MIB, f"rbd:rbd/{vol1}:id=ganeti": 64 * MIB}
    tb.gnt("gnt-instance", "modify", "--hotplug", "-f", "--disk", "1:remove", inst)
    assert rbd_drives(tb, inst) == {uri: 384 * MIB}
    assert vol1 not in images(ceph_admin)

    tb.gnt("gnt-backup", "export", "--noshutdown", "-n", tb.node_names[0], inst, timeout=600)
    snaps, _ = snapshots_and_meta(ceph_admin, vol)
    assert snaps == [] and set(images(ceph_admin)) - before == {vol}  # no .snap volume, no snapshot left
    tb.run(0, ["gnt-backup", "remove", inst], check=False)

    renamed = "r" + inst
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)  # Ganeti renames stopped instances only
    tb.gnt("gnt-instance", "rename", "-f", "--no-ip-check", "--no-name-check", inst, renamed)
    try:
        tb.gnt("gnt-instance", "startup", renamed)
        _, meta = snapshots_and_meta(ceph_admin, vol)
        assert renamed in meta.get("ganeti.metadata", "")  # setinfo re-sent on rename; VOL_NAME unchanged
        tb.gnt("gnt-instance", "migrate", "-f", renamed)
        assert pnode(tb, renamed) == 1 and rbd_drives(tb, renamed) == {uri: 384 * MIB}
        tb.gnt("gnt-instance", "migrate", "-f", renamed)
        assert pnode(tb, renamed) == 0
        tb.gnt("gnt-instance", "failover", "-f", "--shutdown-timeout=0", renamed)
        assert pnode(tb, renamed) == 1 and rbd_drives(tb, renamed) == {uri: 384 * MIB}
        no_leaks(tb)
    finally:
        tb.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", renamed)
    assert set(images(ceph_admin)) - before == set()
    no_leaks(tb)
