"""gnt-storage rbd-convert of Ganeti's own `-t rbd` instances, on real Ganeti: through a carrier `-t ext`
instance whose disks adopt the images, detached from it and attached to the instance in place of its rbd disks;
no data copied, names and modes kept; a run killed after each step is finished by a rerun.

What could not run here as in production: Ganeti's RADOSBlockDevice maps every disk with the kernel's rbd module
(`rbd map`), which this machine's kernel lacks. The nodes get, for this module's tests only, an `rbd` command
that stands in for krbd (testbed/krbd_standin.py: map/showmapped/unmap through rbd-fuse and a loop device; every
other subcommand is the real /usr/bin/rbd) and the bed Ceph's admin keyring, as Ganeti's rbd CLI needs."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from testbed import krbd_standin
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import MiB, disks, images, io, no_leaks

SIZES = (256, 64)
TEMPLATES = "ext,file,rbd"


@pytest.fixture(scope="module")
def rbd_template(testbed: Testbed, ceph_admin: Config) -> Iterator[None]:
    """Ganeti's rbd template enabled (pool rbd), the krbd stand-in on every node; all undone after."""
    for i in range(len(testbed.nodes)):
        krbd_standin.install(testbed, i, ceph_admin.keyring)
    testbed.gnt("gnt-cluster", "modify", f"--enabled-disk-templates={TEMPLATES}",
                f"--ipolicy-disk-templates={TEMPLATES}", "-D", "rbd:pool=rbd")
    try:
        yield
    finally:
        testbed.run(0, ["gnt-cluster", "modify", "--enabled-disk-templates=ext,file",
                        "--ipolicy-disk-templates=ext,file"], check=False)
        for i in range(len(testbed.nodes)):
            krbd_standin.uninstall(testbed, i)


@pytest.fixture
def rbd_instance(testbed: Testbed, rbd_template: None) -> Iterator[str]:
    """A stopped KVM instance (no OS) of Ganeti's rbd template with two named disks, the second read-only."""
    name = f"rt{time.monotonic_ns() % 10**6}.gcb.test"
    short = name.split(".")[0]
    testbed.gnt("gnt-instance", "add", "-t", "rbd", "--disk", f"0:size={SIZES[0]}M,name={short}-root",
                "--disk", f"1:size={SIZES[1]}M,name={short}-data,mode=ro", "--hypervisor", "kvm",
                "-o", "noop+default", "-B", "memory=128M", "-n", testbed.node_names[0], "--no-ip-check",
                "--no-name-check", "--no-start", name, timeout=600)
    yield name
    for n in (name, f"{short}-rbd-convert"):
        testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", n],
                    check=False, timeout=600)


def write_through_ganeti(tb: Testbed, inst: str, index: int, data: bytes, offset: int) -> None:
    """Write through the device Ganeti's RADOSBlockDevice assembled (activate-disks prints node:disk/N:DEV)."""
    out = tb.gnt("gnt-instance", "activate-disks", inst)
    dev = next(line.rsplit(":", 1)[1] for line in out.splitlines() if f":disk/{index}:" in line)
    src = os.path.join(tb.workdir, "write.bin")  # the nodes see the host's files outside their overlays
    with open(src, "wb") as fh:
        fh.write(data)
    tb.run(0, ["dd", f"if={src}", f"of={dev}", "bs=1M", f"seek={offset // MiB}", "oflag=direct", "conv=notrunc",
               "status=none"])


def test_ganeti_makes_and_writes_an_rbd_template_instance(testbed: Testbed, ceph_admin: Config,
                                                          rbd_instance: str) -> None:
    tb, inst = testbed, rbd_instance
    ds = disks(tb, inst)
    assert [d["dev_type"] for d in ds] == ["rbd", "rbd"]
    vols = [d["logical_id"][1] for d in ds]
    assert set(vols) <= images(ceph_admin)
    data = os.urandom(MiB)
    write_through_ganeti(tb, inst, 0, data, MiB)
    tb.gnt("gnt-instance", "deactivate-disks", inst)
    assert hashlib.sha256(io(ceph_admin, vols[0], MiB, MiB)).digest() == hashlib.sha256(data).digest()
    no_leaks(tb)
