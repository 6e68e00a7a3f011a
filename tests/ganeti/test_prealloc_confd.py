"""prealloc_wipe_disks on a node that is not a master candidate: Ganeti removes config.data there, so the
provider asks ganeti-confd on the candidates. A clone (`origin=`) with that node as primary is made while the
setting is off and refused while it is on; before, it was refused either way ("cannot tell"), so instances
from templates worked on no node beyond the candidate pool."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from testbed.ganeti import Testbed
from tests.ganeti.checks import wait_for
from tests.ganeti.test_access_switch import disks, images, io, wipe_on

MiB = 1024**2
CONFIG_DATA = "/var/lib/ganeti/config.data"
REFUSED = "prealloc_wipe_disks is on and would zero"
DAEMON_UTIL = "/usr/lib/ganeti/daemon-util"


def has_config(tb: Testbed, index: int) -> bool:
    return tb.run(index, ["test", "-e", CONFIG_DATA], check=False).returncode == 0


@pytest.fixture
def non_candidate(testbed: Testbed) -> Iterator[str]:
    """Node 1 (not the master) as a regular node for the test, a master candidate again after it."""
    tb, node = testbed, testbed.node_names[1]
    tb.gnt("gnt-node", "modify", "--master-candidate=no", "-f", node)
    try:
        assert not has_config(tb, 1), "Ganeti left config.data on a node that is no master candidate"
        yield node
    finally:
        tb.gnt("gnt-node", "modify", "--master-candidate=yes", "-f", node)
        wait_for("config.data back on node 1", lambda: has_config(tb, 1), timeout=30)


@pytest.fixture
def template(ceph_admin: Config) -> Iterator[str]:
    """An image with data, as an instance template is, to clone with origin=."""
    import rbd

    name = f"tpl-{time.monotonic_ns() % 10**6}"
    with Session(ceph_admin) as s, s.ioctx("rbd") as ioctx:
        rbd.RBD().create(ioctx, name, 64 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    yield name
    with Session(ceph_admin) as s, s.ioctx("rbd") as ioctx:  # with the snapshots the clones were made from
        with rbd.Image(ioctx, name) as img:
            for snap in list(img.list_snaps()):
                if img.is_protected_snap(snap["name"]):
                    img.unprotect_snap(snap["name"])
                img.remove_snap(snap["name"])
        rbd.RBD().remove(ioctx, name)


def add(tb: Testbed, name: str, node: str, origin: str) -> tuple[int, str]:
    res = tb.run(0, ["gnt-instance", "add", "-t", "ext", "--disk",
                     f"0:size=64M,provider=rbd,access=userspace,origin={origin}", "--hypervisor", "kvm",
                     "-o", "noop+default", "-B", "memory=128M", "-n", node, "--no-ip-check", "--no-name-check",
                     "--no-start", name], check=False, timeout=300)
    return res.returncode, res.stdout + res.stderr


def add_disk(tb: Testbed, name: str, origin: str) -> tuple[int, str]:
    res = tb.run(0, ["gnt-instance", "modify", "--disk",
                     f"1:add,size=64M,provider=rbd,access=userspace,origin={origin}", name], check=False, timeout=300)
    return res.returncode, res.stdout + res.stderr


def test_origin_on_a_non_candidate_follows_the_setting_confd_reports(testbed: Testbed, ceph_admin: Config,
                                                                      non_candidate: str, template: str) -> None:
    tb, node = testbed, non_candidate
    data = os.urandom(MiB)
    io(ceph_admin, template, 0, data)
    inst, other = (f"{p}{time.monotonic_ns() % 10**6}.gcb.test" for p in ("nc", "nd"))
    try:
        started = time.monotonic()
        code, out = add(tb, inst, node, template)  # the setting is off (the test bed's default)
        assert code == 0, out
        print(f"gnt-instance add with origin= on the non-candidate: {time.monotonic() - started:.1f} s")
        assert tb.gnt("gnt-instance", "list", "--no-headers", "-o", "pnode", inst).strip() == node
        (first,) = [d["logical_id"][1] for d in disks(tb, inst)]
        assert io(ceph_admin, first, 0, MiB) == data

        present, before = images(ceph_admin), disks(tb, inst)
        with wipe_on(tb):
            code, out = add_disk(tb, inst, template)
            assert code != 0 and REFUSED in out, out
            code, out = add(tb, other, node, template)
            assert code != 0 and REFUSED in out, out
        assert other not in tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name")
        assert disks(tb, inst) == before and images(ceph_admin) == present

        code, out = add_disk(tb, inst, template)  # off again: the next job's clone goes ahead
        assert code == 0, out
        second = disks(tb, inst)[1]["logical_id"][1]
        assert io(ceph_admin, second, 0, MiB) == data and io(ceph_admin, first, 0, MiB) == data
    finally:
        tb.run(0, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "--ignore-failures", inst], check=False)


def confd_listens(tb: Testbed) -> bool:
    return ":1814 " in tb.run(0, ["ss", "-Huln"]).stdout


@contextlib.contextmanager
def confd_stopped(tb: Testbed) -> Iterator[None]:
    """ganeti-confd down on the master (the only candidate left) for the block, started again after it."""
    tb.run(0, [DAEMON_UTIL, "stop", "ganeti-confd"])
    try:
        wait_for("ganeti-confd to stop", lambda: not confd_listens(tb))
        yield
    finally:
        tb.run(0, [DAEMON_UTIL, "start", "ganeti-confd"])
        wait_for("ganeti-confd to listen again", lambda: confd_listens(tb))


def test_no_answer_from_confd_is_cannot_tell_and_refused(testbed: Testbed, ceph_admin: Config,
                                                         non_candidate: str, template: str) -> None:
    """The setting is off, but nobody can say so: the clone is refused in one line, nothing is made."""
    tb, node = testbed, non_candidate
    other = f"ne{time.monotonic_ns() % 10**6}.gcb.test"
    present = images(ceph_admin)
    with confd_stopped(tb):
        started = time.monotonic()
        code, out = add(tb, other, node, template)
        print(f"gnt-instance add refused without confd after {time.monotonic() - started:.1f} s")
    assert code != 0 and "cannot tell whether Ganeti's prealloc_wipe_disks" in out, out
    assert "ganeti-confd on the master candidates gave no consistent answer" in out, out
    assert other not in tb.gnt("gnt-instance", "list", "--no-headers", "-o", "name")
    assert images(ceph_admin) == present
