"""gnt-storage rbd-convert on the real cluster: disks GRNET's rbd provider made are taken over by ours without
copying, data, order and names kept; QEMU then opens them through ours; a run killed after its add is finished
by a rerun.

What could not run here: GRNET's provider itself (Python 2 code, github.com/grnet/gnt-extstorage-rbd
ext_scripts/ext_rbd.py; Debian 12 has no Python 2). (Ganeti's own `-t rbd` instances are converted in
test_convert_rbd_template.py.) So the GRNET state is made as that provider leaves it: the disk entry through Ganeti
(`gnt-instance add`, then `gnt-instance modify --disk N:modify,rbd_pool=...`, Ganeti's own way to set ext
parameters), the image as its create makes it (`rbd create POOL/VOL_CNAME --size N`: a librbd create with the
cluster's default features), and no image under the disk's VOL_NAME."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import MiB, disks, drives, held, images, io, no_leaks

SIZES = (256, 64)


def rbd_convert(tb: Testbed, *args: str) -> tuple[int, str, str]:
    res = tb.run(0, [tb.gnt_storage, "rbd-convert", *args], check=False, timeout=600)
    return res.returncode, res.stdout, res.stderr


def as_grnet_made(tb: Testbed, admin: Config, inst: str) -> list[str]:
    """Turn the instance's disks into what GRNET's provider leaves: parameters and images (module docstring)."""
    import rbd

    tb.gnt("gnt-instance", "deactivate-disks", inst)
    tb.gnt("gnt-instance", "modify", "--disk", "0:modify,rbd_pool=rbd,userspace_only=true,cephx_id=admin", inst)
    tb.gnt("gnt-instance", "modify", "--disk", "1:modify,rbd_pool=rbd,image_format=2", inst)
    names = []
    with Session(admin) as s, s.ioctx("rbd") as ioctx:
        for d, size in zip(disks(tb, inst), SIZES, strict=True):
            rbd.RBD().remove(ioctx, d["logical_id"][1])  # GRNET's create never made an image of that name
            rbd.RBD().create(ioctx, d["name"], size * MiB, old_format=False)
            names.append(d["name"])
    return names


def fill(admin: Config, vol: str, size_mib: int) -> str:
    """Random data at the start and the end of the image; their checksum."""
    head, tail = os.urandom(MiB), os.urandom(MiB)
    io(admin, vol, 0, head)
    io(admin, vol, (size_mib - 1) * MiB, tail)
    return hashlib.sha256(head + tail).hexdigest()


def checksum(admin: Config, vol: str, size_mib: int) -> str:
    return hashlib.sha256(io(admin, vol, 0, MiB) + io(admin, vol, (size_mib - 1) * MiB, MiB)).hexdigest()


@pytest.fixture
def grnet_instance(testbed: Testbed) -> Iterator[str]:
    """A stopped KVM instance (no OS) with two named disks, made by our provider, to be turned into GRNET's."""
    name = f"cv{time.monotonic_ns() % 10**6}.gcb.test"
    testbed.gnt("gnt-instance", "add", "-t", "ext",
                "--disk", f"0:size={SIZES[0]}M,provider=rbd,access=userspace,name={name.split('.')[0]}-disk0",
                "--disk", f"1:size={SIZES[1]}M,provider=rbd,name={name.split('.')[0]}-disk1", "--hypervisor", "kvm",
                "-o", "noop+default", "-B", "memory=128M", "-n", testbed.node_names[0], "--no-ip-check",
                "--no-name-check", "--no-start", name)
    yield name
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", name], check=False)


def summary(tb: Testbed, inst: str) -> list[tuple[str | None, dict, str]]:
    return [(d.get("name"), d["params"], d["logical_id"][1]) for d in disks(tb, inst)]


def test_refusals_are_one_line(testbed: Testbed) -> None:
    code, out, err = rbd_convert(testbed, "nosuch.gcb.test")
    assert code != 0 and out == "" and len(err.splitlines()) == 1 and "does not exist" in err, err


def test_grnet_disks_are_taken_over_with_their_data(testbed: Testbed, ceph_admin: Config,
                                                    grnet_instance: str) -> None:
    tb, inst = testbed, grnet_instance
    started = time.monotonic()
    tb.gnt("gnt-instance", "start", inst)  # before it is GRNET's: GRNET's disks do not attach through ours
    code, out, err = rbd_convert(tb, inst)
    assert code != 0 and out == "" and len(err.splitlines()) == 1 and "is running" in err, err
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)
    names = as_grnet_made(tb, ceph_admin, inst)
    sums = [fill(ceph_admin, n, size) for n, size in zip(names, SIZES, strict=True)]
    before, (u0, u1) = summary(tb, inst), [d["uuid"] for d in disks(tb, inst)]  # removes go by UUID

    with held(ceph_admin, names[1]):  # as a mapping GRNET's provider left would hold it
        code, out, err = rbd_convert(tb, inst)
    assert code != 0 and out == "" and len(err.splitlines()) == 1, err
    assert f"image rbd/{names[1]} is in use (watched by " in err and summary(tb, inst) == before, err

    code, out, err = rbd_convert(tb, inst, "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        f"gnt-instance deactivate-disks {inst}",
        f"gnt-instance modify --disk 0:add,size=256M,provider=rbd,access=userspace,adopt_image={names[0]},"
        f"pool=rbd {inst}",
        f"gnt-instance modify --disk {u0}:remove {inst}", f"gnt-instance modify --disk 0:modify,name={names[0]} {inst}",
        f"gnt-instance modify --disk 1:add,size=64M,provider=rbd,access=kernelspace,adopt_image={names[1]},"
        f"pool=rbd {inst}",
        f"gnt-instance modify --disk {u1}:remove {inst}", f"gnt-instance modify --disk 1:modify,name={names[1]} {inst}"]
    assert summary(tb, inst) == before

    code, out, err = rbd_convert(tb, inst)
    assert code == 0, err
    assert out == f"{inst}: disk/0, disk/1 converted to the rbd provider\n"
    after = summary(tb, inst)
    assert [(n, p) for n, p, _ in after] == [  # Ganeti keeps adopt_image; the provider ignores it after create
        (names[0], {"provider": "rbd", "access": "userspace", "pool": "rbd", "adopt_image": names[0]}),
        (names[1], {"provider": "rbd", "access": "kernelspace", "pool": "rbd", "adopt_image": names[1]})]
    vols = [v for _, _, v in after]
    present = images(ceph_admin)
    assert set(vols) <= present and present.isdisjoint(names)
    assert [checksum(ceph_admin, v, s) for v, s in zip(vols, SIZES, strict=True)] == sums
    no_leaks(tb)
    print(f"conversion of 2 disks done after {time.monotonic() - started:.1f} s")

    runs_through_ours(tb, ceph_admin, inst, vols, sums, names)


def runs_through_ours(tb: Testbed, admin: Config, inst: str, vols: list[str], sums: list[str],
                      old: list[str]) -> None:
    """After a conversion: a rerun has nothing to do; QEMU opens disk 0 (userspace) through librbd and disk 1
    (kernelspace) through its mapping; the data is unchanged; removing the instance leaves no image, old or new."""
    code, out, _ = rbd_convert(tb, inst)
    assert code == 0 and "nothing to do" in out
    tb.gnt("gnt-instance", "start", inst)
    assert drives(tb, inst) == [f"rbd:rbd/{vols[0]}:id=ganeti", f"/var/run/ganeti/instance-disks/{inst}:1"]
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)
    assert [checksum(admin, v, s) for v, s in zip(vols, SIZES, strict=True)] == sums
    tb.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", inst)
    assert images(admin).isdisjoint([*vols, *old])
    no_leaks(tb)


def test_a_run_killed_after_its_add_is_finished_by_a_rerun(testbed: Testbed, ceph_admin: Config,
                                                          grnet_instance: str) -> None:
    """The tool's first step done (the add that adopts disk/0's image), the tool gone before its remove: the
    instance has the new disk at 0 and GRNET's entry at 1. A rerun proves it by the image's adoption record,
    removes that entry, names the new disk, and converts the rest."""
    tb, inst = testbed, grnet_instance
    names = as_grnet_made(tb, ceph_admin, inst)
    sums = [fill(ceph_admin, n, size) for n, size in zip(names, SIZES, strict=True)]
    _, out, _ = rbd_convert(tb, inst, "--dry-run")
    tb.run(0, out.splitlines()[1].split())  # the add, as the tool runs it
    assert len(disks(tb, inst)) == 3 and names[0] not in images(ceph_admin)

    code, out, err = rbd_convert(tb, inst, "--dry-run")
    assert code != 0 and len(err.splitlines()) == 1 and "interrupted run" in err, err
    code, out, err = rbd_convert(tb, inst)
    assert code == 0 and out == f"{inst}: disk/1 converted to the rbd provider\n", err
    after = summary(tb, inst)
    assert [n for n, _, _ in after] == names and all(p.get("pool") == "rbd" for _, p, _ in after)
    assert [checksum(ceph_admin, v, s) for (_, _, v), s in zip(after, SIZES, strict=True)] == sums
    assert images(ceph_admin).isdisjoint(names)
    no_leaks(tb)
