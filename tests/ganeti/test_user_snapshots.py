"""gnt-storage snapshot on the real cluster: a revert is refused while the instance runs; stopped, it is
reverted, and the restarted instance's disk (QEMU's, read on its node) holds the snapshot's data."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.rbd import user_snapshots
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import disks, io

MiB = 1024**2


def snapshot(tb: Testbed, *args: str) -> tuple[int, str, str]:
    res = tb.run(0, [tb.gnt_storage, "snapshot", *args], check=False, timeout=300)
    return res.returncode, res.stdout, res.stderr


def disk_sha(tb: Testbed, instance: str) -> str:
    """The first MiB of disk 0 as the running instance's node sees it (its device link)."""
    out = tb.run(0, ["sh", "-c", f"head -c {MiB} /var/run/ganeti/instance-disks/{instance}:0 | sha256sum"]).stdout
    return out.split()[0]


def read_snap(admin: Config, vol: str, name: str) -> bytes:
    """The first MiB of the volume at user snapshot `name`."""
    import rbd

    with Session(admin) as s, s.ioctx("rbd") as ioctx, \
            rbd.Image(ioctx, vol, snapshot=user_snapshots.PREFIX + name, read_only=True) as img:
        return img.read(0, MiB)


@pytest.fixture
def instance(testbed: Testbed) -> Iterator[str]:
    """A stopped KVM instance (no OS) with one kernelspace rbd disk named root."""
    name = f"us{time.monotonic_ns() % 10**6}.gcb.test"
    testbed.gnt("gnt-instance", "add", "-t", "ext", "--disk", "0:size=64M,provider=rbd,name=root", "--hypervisor",
                "kvm", "-o", "noop+default", "-B", "memory=128M", "-n", testbed.node_names[0], "--no-ip-check",
                "--no-name-check", "--no-start", name)
    yield name
    testbed.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", name], check=False)


def test_revert_refused_while_running_then_seen_by_the_restarted_instance(testbed: Testbed, ceph_admin: Config,
                                                                          instance: str) -> None:
    tb, inst = testbed, instance
    vol = disks(tb, inst)[0]["logical_id"][1]
    old, new = os.urandom(MiB), os.urandom(MiB)
    io(ceph_admin, vol, 0, old)
    code, out, err = snapshot(tb, "add", inst, "root", "base")
    assert (code, out) == (0, f"{inst} disk/0: snapshot base taken\n"), err
    io(ceph_admin, vol, 0, new)

    tb.gnt("gnt-instance", "start", inst)
    assert disk_sha(tb, inst) == hashlib.sha256(new).hexdigest()
    code, out, err = snapshot(tb, "revert", inst, "0", "base")
    assert code != 0 and out == "" and len(err.splitlines()) == 1 and "is running" in err, err
    code, out, err = snapshot(tb, "list", inst, "--no-headers", "--separator=|", "-o", "disk,name,size,state")
    assert (code, out) == (0, "0|base|64M|\n"), err
    code, out, err = snapshot(tb, "add", inst, "0", "live")  # the guest runs: crash-consistent
    assert (code, out) == (0, f"{inst} disk/0: snapshot live taken\n"), err
    assert read_snap(ceph_admin, vol, "live") == new

    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)
    code, out, err = snapshot(tb, "revert", inst, "root", "base")
    assert code == 0, err
    safety = out.split("the state before is snapshot ")[1].split()[0]
    assert out == (f"{inst} disk/0: reverted to snapshot base; the state before is snapshot {safety} (undo: "
                   f"gnt-storage snapshot revert {inst} 0 {safety})\n")

    tb.gnt("gnt-instance", "start", inst)
    assert disk_sha(tb, inst) == hashlib.sha256(old).hexdigest()
    code, out, _ = snapshot(tb, "list", inst, "0", "--no-headers", "-o", "name")
    assert out.split() == ["base", "live", safety]
    code, out, err = snapshot(tb, "remove", inst, "0", "nosuch")
    assert code != 0 and len(err.splitlines()) == 1 and "no snapshot nosuch" in err, err
    tb.gnt("gnt-instance", "shutdown", "--timeout=0", inst)

    # A revert cut short during its rollback (the state it leaves: marker written, safety snapshot taken).
    with Session(ceph_admin) as s:
        cut = user_snapshots.revert(s, "rbd", vol, "base", stop_after_safety=True)
    code, out, err = snapshot(tb, "list", inst, "--no-headers", "--separator=|", "-o", "name,state")
    assert out.splitlines() == ["base|revert target (unfinished)", "live|", f"{safety}|",
                                f"{cut.safety}|revert safety (unfinished)"]
    assert f"finish it: gnt-storage snapshot revert {inst} 0 base" in err, err
    code, out, err = snapshot(tb, "add", inst, "0")
    assert code != 0 and len(err.splitlines()) == 1 and "stopped halfway" in err, err
    code, out, err = snapshot(tb, "revert", inst, "0", "base")
    assert code == 0 and out.startswith(f"{inst} disk/0: finished the revert to snapshot base; the state before "
                                        f"is snapshot {cut.safety} "), err

    for name in ("base", "live", safety, cut.safety):
        code, out, err = snapshot(tb, "remove", inst, "0", name)
        assert (code, out) == (0, f"{inst} disk/0: snapshot {name} removed\n"), err
    snapshot(tb, "add", inst, "0", "a")
    code, out, err = snapshot(tb, "add", inst, "0", "b", "--keep", "1")
    assert out.splitlines() == [f"{inst} disk/0: snapshot b taken",
                                f"{inst} disk/0: snapshot a removed (beyond --keep 1)"], err
    code, out, err = snapshot(tb, "remove", inst, "0", "b")
    assert code == 0, err
    tb.gnt("gnt-instance", "remove", "-f", inst)  # no user snapshot left: the provider's remove goes through
