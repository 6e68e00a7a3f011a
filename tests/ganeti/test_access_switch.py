"""gnt-storage rbd-access on the real cluster: a stopped KVM instance's rbd disks move between kernelspace and
userspace, keeping data, image, order and name; QEMU then opens them the other way; nothing leaks."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed

MiB = 1024**2
GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")
EMPTY = {"mounts": [], "loops": []}


def rbd_access(tb: Testbed, *args: str) -> tuple[int, str, str]:
    res = tb.run(0, [GNT_STORAGE, "rbd-access", *args], check=False, timeout=600)
    return res.returncode, res.stdout, res.stderr


def disks(tb: Testbed, instance: str) -> list[dict]:
    """The instance's disks in order, as Ganeti stores them (no gnt-* command shows their parameters)."""
    cfg = json.loads(tb.run(0, ["cat", "/var/lib/ganeti/config.data"]).stdout)
    inst = next(i for i in cfg["instances"].values() if i["name"] == instance)
    return [cfg["disks"][uuid] for uuid in inst["disks"]]


def summary(tb: Testbed, instance: str) -> list[tuple[str | None, str, str]]:
    """(name, access, volume) per disk."""
    return [(d.get("name"), d["params"].get("access", "kernelspace"), d["logical_id"][1]) for d in disks(tb, instance)]


def drives(tb: Testbed, instance: str) -> list[str]:
    """The file= of every -drive on the running QEMU's command line."""
    pid = tb.run(0, ["cat", f"/var/run/ganeti/kvm-hypervisor/pid/{instance}"]).stdout.strip()
    argv = tb.run(0, ["cat", f"/proc/{pid}/cmdline"]).stdout.split("\0")
    return [argv[i + 1].split(",")[0].removeprefix("file=") for i, a in enumerate(argv[:-1]) if a == "-drive"]


def images(admin: Config) -> set[str]:
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as io:
        return set(rbd.RBD().list(io))


def io(admin: Config, vol: str, offset: int, data: bytes | int) -> bytes:
    """Write `data` at `offset`, or read that many bytes, through librbd as the admin."""
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as ioctx, rbd.Image(ioctx, vol, read_only=isinstance(data, int)) as img:
        if isinstance(data, int):
            return img.read(offset, data)
        img.write(data, offset)
        return data


def no_leaks(tb: Testbed) -> None:
    for index in range(len(tb.nodes)):
        assert tb.mappings(index) == EMPTY, f"node {index} still maps something"
    assert tb.leaked_loops() == []


@pytest.fixture
def kvm_instance(testbed: Testbed) -> Iterator[str]:
    """A stopped KVM instance (no OS): disk 0 kernelspace named root, disk 1 userspace."""
    name = f"sw{time.monotonic_ns() % 10**6}.gcb.test"
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=256M,provider=rbd,name=root",
                "--disk", "1:size=64M,provider=rbd,access=userspace", "--hypervisor", "kvm", "-o", "noop+default",
                "-B", "memory=128M", "-n", testbed.node_names[0], "--no-ip-check", "--no-name-check", "--no-start",
                name)
    yield name
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", name], check=False)


def test_refusals_are_one_line(testbed: Testbed) -> None:
    for args, text in ((["nosuch.gcb.test", "userspace"], "does not exist"), (["x", "sideways"], "not valid")):
        code, out, err = rbd_access(testbed, *args)
        assert code != 0 and out == "" and len(err.splitlines()) == 1 and text in err, err


def test_switch_back_and_forth(testbed: Testbed, ceph_admin: Config, kvm_instance: str) -> None:
    tb, inst = testbed, kvm_instance
    started = time.monotonic()
    (_, _, vol0), (_, _, vol1) = before = summary(tb, inst)
    assert before == [("root", "kernelspace", vol0), (None, "userspace", vol1)]
    head, tail, small = os.urandom(MiB), os.urandom(MiB), os.urandom(MiB)
    io(ceph_admin, vol0, 0, head)
    io(ceph_admin, vol0, 255 * MiB, tail)
    io(ceph_admin, vol1, 0, small)

    code, out, err = rbd_access(tb, inst, "userspace", "--dry-run")
    assert code == 0, err
    assert out.splitlines() == [
        f"gnt-instance deactivate-disks {inst}",
        f"gnt-instance modify --disk 0:add,size=256M,provider=rbd,access=userspace,adopt_image={vol0} {inst}",
        f"gnt-instance modify --disk 1:remove {inst}", f"gnt-instance modify --disk 0:modify,name=root {inst}"]
    assert summary(tb, inst) == before

    code, out, err = rbd_access(tb, inst, "userspace")
    assert code == 0, err
    assert out == f"{inst}: disk/0 switched to userspace\n"
    (name, access, new0), second = summary(tb, inst)
    assert (name, access, second) == ("root", "userspace", before[1]) and new0 != vol0
    assert vol0 not in images(ceph_admin) and new0 in images(ceph_admin)
    assert io(ceph_admin, new0, 0, MiB) == head and io(ceph_admin, new0, 255 * MiB, MiB) == tail
    no_leaks(tb)
    print(f"first switch after {time.monotonic() - started:.1f} s")

    code, out, _ = rbd_access(tb, inst, "userspace")
    assert code == 0 and "already use userspace" in out

    tb.gnt("gnt-instance", "start", inst)
    assert drives(tb, inst) == [f"rbd:rbd/{new0}:id=ganeti", f"rbd:rbd/{vol1}:id=ganeti"]
    assert tb.mappings(0) == EMPTY, "userspace disks are not mapped"
    code, out, err = rbd_access(tb, inst, "kernelspace")
    assert code != 0 and out == "" and len(err.splitlines()) == 1 and "is running" in err, err
    assert summary(tb, inst) == [("root", "userspace", new0), before[1]]
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)

    code, out, err = rbd_access(tb, inst, "kernelspace")
    assert code == 0, err
    assert out == f"{inst}: disk/0, disk/1 switched to kernelspace\n"
    after = summary(tb, inst)
    assert [(n, a) for n, a, _ in after] == [("root", "kernelspace"), (None, "kernelspace")]
    last0, last1 = after[0][2], after[1][2]
    assert {new0, vol1}.isdisjoint(images(ceph_admin)) and {last0, last1} <= images(ceph_admin)
    no_leaks(tb)

    tb.gnt("gnt-instance", "start", inst)
    assert drives(tb, inst) == [f"/var/run/ganeti/instance-disks/{inst}:{i}" for i in (0, 1)]
    assert len(tb.mappings(0)["loops"]) == 2
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)
    assert io(ceph_admin, last0, 0, MiB) == head and io(ceph_admin, last0, 255 * MiB, MiB) == tail
    assert io(ceph_admin, last1, 0, MiB) == small

    tb.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout=0", inst)
    assert {vol0, vol1, new0, last0, last1}.isdisjoint(images(ceph_admin))
    no_leaks(tb)
    print(f"whole test {time.monotonic() - started:.1f} s")
