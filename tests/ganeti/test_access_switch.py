"""gnt-storage rbd-access on the real cluster: a stopped KVM instance's rbd disks move between kernelspace and
userspace, keeping data, image, order and name; QEMU then opens them the other way; nothing leaks."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed

MiB = 1024**2
EMPTY = {"mounts": [], "loops": []}


def rbd_access(tb: Testbed, *args: str) -> tuple[int, str, str]:
    res = tb.run(0, [tb.gnt_storage, "rbd-access", *args], check=False, timeout=600)
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
        f"gnt-instance modify --disk {disks(tb, inst)[0]['uuid']}:remove {inst}",
        f"gnt-instance modify --disk 0:modify,name=root {inst}"]
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


@contextlib.contextmanager
def wipe_on(tb: Testbed) -> Iterator[None]:
    """Ganeti's prealloc_wipe_disks on for the block, off again after it (the test bed's default)."""
    tb.gnt("gnt-cluster", "modify", "--prealloc-wipe-disks", "yes")
    try:
        yield
    finally:
        tb.gnt("gnt-cluster", "modify", "--prealloc-wipe-disks", "no")


def test_prealloc_wipe_disks_refused_with_nothing_changed(testbed: Testbed, ceph_admin: Config,
                                                         kvm_instance: str) -> None:
    """With the setting on, Ganeti zeroes every disk it adds: before the fix `rbd-access INST kernelspace` reported
    success and the adopted image read back as zeros. Now both directions, and the provider's adopt_image= and
    origin= on `gnt-instance modify --disk add`, are refused in one line and nothing changes."""
    tb, inst = testbed, kvm_instance
    before = summary(tb, inst)
    (_, _, vol0), (_, _, vol1) = before
    head, small = os.urandom(MiB), os.urandom(MiB)
    io(ceph_admin, vol0, 255 * MiB, head)
    io(ceph_admin, vol1, 0, small)
    present, mapped = images(ceph_admin), [tb.mappings(i) for i in range(len(tb.nodes))]
    with wipe_on(tb):
        for target in ("userspace", "kernelspace"):  # disk 0 goes one way, disk 1 the other
            code, out, err = rbd_access(tb, inst, target)
            assert code != 0 and out == "" and len(err.splitlines()) == 1, err
            assert "prealloc_wipe_disks is on" in err and "--prealloc-wipe-disks no" in err, err
        for param in (f"adopt_image={vol1}", f"origin={vol1}"):
            res = tb.run(0, ["gnt-instance", "modify", "--disk", f"2:add,size=64M,provider=rbd,access=kernelspace,"
                             f"{param}", inst], check=False)
            assert res.returncode != 0 and "prealloc_wipe_disks is on and would zero" in res.stdout + res.stderr
            other = f"new{time.monotonic_ns() % 10**6}.gcb.test"  # gnt-instance add wipes too (instance_create)
            res = tb.run(0, ["gnt-instance", "add", "-t", "ext", "--disk", f"0:size=64M,provider=rbd,{param}",
                             "--hypervisor", "kvm", "-o", "noop+default", "-B", "memory=128M", "-n",
                             tb.node_names[0], "--no-ip-check", "--no-name-check", "--no-start", other], check=False)
            assert res.returncode != 0 and "prealloc_wipe_disks is on and would zero" in res.stdout + res.stderr
            assert other not in tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name")
    assert summary(tb, inst) == before and images(ceph_admin) == present
    assert io(ceph_admin, vol0, 255 * MiB, MiB) == head and io(ceph_admin, vol1, 0, MiB) == small
    assert "preallocation wipe disks: False" in tb.gnt("gnt-cluster", "info")
    assert [tb.mappings(i) for i in range(len(tb.nodes))] == mapped  # as `gnt-instance add --no-start` left them


@contextlib.contextmanager
def held(admin: Config, vol: str) -> Iterator[None]:
    """The image open (a watcher) for the block, as a forgotten mapping elsewhere would hold it."""
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as ioctx, rbd.Image(ioctx, vol):
        yield


def test_an_adoption_stopped_halfway_is_completed_by_the_printed_command(testbed: Testbed, ceph_admin: Config,
                                                                        kvm_instance: str) -> None:
    """An adopt that died after its rename (done here by hand, as adopt does it: index entry, record, rename) leaves the
    config naming an image that is gone. Before the fix the switch said "nothing changed" and its re-run advised
    dropping that disk. Now a switch that fails (the image held open) names where the image is and the command
    that finishes; that command completes the adoption with the data."""
    import rbd

    tb, inst = testbed, kvm_instance
    (name, _, vol0), second = before = summary(tb, inst)
    data = os.urandom(MiB)
    io(ceph_admin, vol0, 255 * MiB, data)
    halfway = f"halfway-{time.monotonic_ns() % 10**6}"
    with Session(ceph_admin) as s, s.ioctx("rbd") as ioctx:
        from ganeti_ceph.rbd import omap_index, volumes

        omap_index.put(s, ioctx, volumes.ADOPTIONS, vol0, json.dumps({"at": vol0, "to": halfway}, sort_keys=True))
        with rbd.Image(ioctx, vol0) as img:
            img.metadata_set("ganeti.adopt", json.dumps({"from": vol0, "to": halfway, "done": False}, sort_keys=True))
        rbd.RBD().rename(ioctx, vol0, halfway)
    with held(ceph_admin, halfway):
        code, out, err = rbd_access(tb, inst, "userspace")
    assert code != 0 and out == "", err
    last = err.splitlines()[-1]
    assert f"image rbd/{vol0} is now rbd/{halfway}, which a new run completes" in last, err
    assert summary(tb, inst) == before and halfway in images(ceph_admin)
    printed = last.split("; to finish it run: ")[1]
    assert printed == f"gnt-storage rbd-access {inst} userspace"

    code, out, err = rbd_access(tb, *printed.split()[2:])
    assert code == 0 and out == f"{inst}: disk/0 switched to userspace\n", err
    (new_name, access, new0), after1 = summary(tb, inst)
    assert (new_name, access, after1) == (name, "userspace", second)
    assert {vol0, halfway}.isdisjoint(images(ceph_admin)) and io(ceph_admin, new0, 255 * MiB, MiB) == data
    no_leaks(tb)


def test_a_fresh_adoption_survives_a_remove_while_ganeti_wipes(testbed: Testbed, ceph_admin: Config,
                                                              kvm_instance: str) -> None:
    """Ganeti removes a disk whose wipe failed; if the setting was turned on after the adopt, that remove would
    delete adopted data. Within WIPE_UNDO_S of the adoption, with the setting on, the provider keeps the image:
    Ganeti warns and drops only its config entry (the same remove call its undo makes)."""
    import rbd

    tb, inst = testbed, kvm_instance
    before = summary(tb, inst)
    spare, data = f"spare-{time.monotonic_ns() % 10**6}", os.urandom(MiB)
    with Session(ceph_admin) as s, s.ioctx("rbd") as ioctx:
        rbd.RBD().create(ioctx, spare, 64 * MiB, old_format=False)
    io(ceph_admin, spare, 0, data)
    tb.gnt("gnt-instance", "modify", "--disk", f"2:add,size=64M,provider=rbd,access=userspace,adopt_image={spare}",
           inst)
    adopted = summary(tb, inst)[2][2]
    with wipe_on(tb):
        res = tb.run(0, ["gnt-instance", "modify", "--disk", "2:remove", inst], check=False)
    assert "undoing its failed wipe" in res.stdout + res.stderr, res.stdout + res.stderr
    assert summary(tb, inst) == before and adopted in images(ceph_admin)
    assert io(ceph_admin, adopted, 0, MiB) == data
    with Session(ceph_admin) as s, s.ioctx("rbd") as ioctx:
        rbd.RBD().remove(ioctx, adopted)
