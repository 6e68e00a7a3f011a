"""rbd-access and rbd-convert against a second run on the same instance, on the real cluster (review S7 #1):
while one run holds the instance's lock on the master, another refuses in one line and changes nothing; the
switch that follows names the disks by UUID, which Ganeti 3.0 takes for remove, rename and detach; and the
provider check rbd-convert makes before its journal reads Ganeti's own diagnose output."""

from __future__ import annotations

import json
import os
import select
import subprocess

import pytest

from ganeti_ceph.config import Config
from testbed.ganeti import Testbed
from tests.ganeti.test_access_switch import MiB, disks, io, kvm_instance, rbd_access, summary  # noqa: F401

# Run alone, this test pays the bed's start (2-4 min on a loaded 2-core machine) within its timeout.
pytestmark = pytest.mark.timeout(900)

# Holds the lock as a running rbd-access/rbd-convert does: a flock on the file, its pid inside.
HOLD = """
import fcntl, os, sys, time
d = "/run/ganeti-ceph/instance-lock"
os.makedirs(d, mode=0o700, exist_ok=True)
fd = os.open(os.path.join(d, sys.argv[1] + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, b"%d\\n" % os.getpid())
print(os.getpid(), flush=True)
time.sleep(300)
"""


def holder(tb: Testbed, uuid: str) -> tuple[subprocess.Popen, str]:
    """A process inside the master that holds the instance's lock; its pid as the master sees it."""
    proc = subprocess.Popen([*tb.enter_argv(0), "python3", "-c", HOLD, uuid], stdout=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    assert ready, "the lock holder did not start within 30 s"
    return proc, proc.stdout.readline().strip()  # type: ignore[union-attr]


def instance_uuid(tb: Testbed, name: str) -> str:
    return tb.gnt("gnt-instance", "list", "--no-headers", "-o", "uuid", name).strip()


def test_a_second_run_is_refused_and_disks_are_named_by_uuid(testbed: Testbed, ceph_admin: Config,
                                                             kvm_instance: str) -> None:  # noqa: F811
    tb, inst = testbed, kvm_instance
    before = summary(tb, inst)
    vol0 = before[0][2]
    data = os.urandom(MiB)
    io(ceph_admin, vol0, 0, data)
    proc, pid = holder(tb, instance_uuid(tb, inst))
    try:
        for args in ([inst, "userspace"], [inst, "userspace", "--dry-run"]):
            code, out, err = rbd_access(tb, *args)
            assert code != 0 and out == "" and err.strip().endswith(
                f"another rbd-convert/rbd-access of {inst} is running (pid {pid}); wait for it"), err
            assert len(err.splitlines()) == 1, err
        res = tb.run(0, [tb.gnt_storage, "rbd-convert", inst], check=False, timeout=600)
        assert res.returncode != 0 and f"of {inst} is running (pid {pid})" in res.stderr, res.stderr
        assert summary(tb, inst) == before
    finally:
        tb.run(0, ["kill", "-9", pid], check=False)  # inside the node (nsenter may have forked it)
        proc.kill()
        proc.wait(timeout=30)

    old = disks(tb, inst)[0]["uuid"]
    code, out, err = rbd_access(tb, inst, "userspace")
    assert code == 0 and out == f"{inst}: disk/0 switched to userspace\n", err
    assert f"removing the old entry {old}" in err, err  # removed by UUID, renamed by UUID, Ganeti took both
    (name, access, new0), second = summary(tb, inst)
    assert (name, access, second) == ("root", "userspace", before[1]) and io(ceph_admin, new0, 0, MiB) == data

    # The -t rbd path detaches by UUID too, and attaches all at once to the then diskless instance (Ganeti asks
    # an attach to an ext instance with disks for a provider, which an attach refuses): Ganeti takes that as well.
    uuids = [d["uuid"] for d in disks(tb, inst)]
    for uuid in reversed(uuids):
        tb.gnt("gnt-instance", "modify", "--disk", f"{uuid}:detach", inst)
    assert disks(tb, inst) == []
    tb.gnt("gnt-instance", "modify", "--ignore-ipolicy", *(a for k, u in enumerate(uuids)
                                                          for a in ("--disk", f"{k}:attach,uuid={u}")), inst)
    assert summary(tb, inst) == [(name, access, new0), second]
    tb.gnt("gnt-instance", "deactivate-disks", inst)


def test_the_rbd_provider_check_reads_ganeti_s_diagnose(testbed: Testbed) -> None:
    """Review S7 #3: rbd-convert's first run of a -t rbd instance refuses unless Ganeti's `gnt-storage diagnose`
    calls the provider valid on the primary node; this is that output as Ganeti 3.0 prints it."""
    from ganeti_ceph.rbd.convert_template import provider_valid

    out = testbed.gnt("gnt-storage", "diagnose")
    nodes = json.loads(testbed.run(0, ["cat", "/var/lib/ganeti/config.data"]).stdout)["nodes"]
    assert len(nodes) == 2 and all(provider_valid(out, "rbd", uuid) for uuid in nodes), out
    assert not provider_valid(out, "rbd", testbed.master) and not provider_valid(out, "nosuch", next(iter(nodes)))
