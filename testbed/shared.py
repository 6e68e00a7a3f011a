"""One 2-node Ganeti test bed per pytest session, whichever test directories use it.

tests/ganeti and tests/reliability both drive the bed; each declares its own
fixture (a conftest's fixtures reach only its directory), and both go
through `session_bed`, which starts the bed for the first user and stops it
after the last, so one session never runs two beds on the same work dir.

The nodes run the package, as a Ganeti node in production would: the .debs
`make deb`'s builder makes (testbed.deb: built once per source content,
shared with tests/packaging) are installed by dpkg into each node.

Order matters: the bed's root bridge carries the address Ceph binds to, so
it comes first and goes last; the nodes come after Ceph and go before it
(their rbd-fuse mappings need the cluster to close).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Iterator

from ganeti_ceph.config import Config
from testbed import ceph, deb
from testbed.ganeti import HOST_ADDR, Testbed, TestbedError

ROOT = os.environ.get("GANETI_TESTBED_DIR", "/tmp/ganeti-ceph-test")
CEPH_DIR = os.path.join(ROOT, "gceph")
WORKDIR = os.path.join(ROOT, "gtb")
CEPH_PORT = int(os.environ.get("GANETI_TESTBED_CEPH_PORT", "13400"))

_bed: Testbed | None = None
_users = 0


@functools.cache
def debs() -> tuple[str, str]:
    """Version N (what the nodes get) and N+1 of the package, the same for the whole session: copied
    out of the build cache, which another session may renew when the sources change meanwhile."""
    keep = os.path.join(ROOT, "debs")
    shutil.rmtree(keep, ignore_errors=True)
    os.makedirs(keep)
    n, n1 = (shutil.copy(made, keep) for made in deb.built())
    return n, n1


def _start() -> Testbed:
    # `make test` installs Ganeti: a missing one is a broken set-up, not a reason to skip.
    if os.geteuid() != 0:
        raise TestbedError("the Ganeti test bed needs root")
    if not shutil.which("gnt-cluster", path="/usr/sbin:/usr/bin") or not shutil.which("sshd", path="/usr/sbin"):
        raise TestbedError("Ganeti or openssh-server is not installed (make test installs them: scripts/install-deps)")
    tb = Testbed(WORKDIR, CEPH_DIR, nodes=2, install=f"deb:{debs()[0]}")
    tb.nodes_down()  # remains of an interrupted session
    ceph.local_cluster("down", CEPH_DIR, check=False)
    tb.network_up()
    try:
        ceph.up(CEPH_DIR, HOST_ADDR, CEPH_PORT)
        tb.up()
    except BaseException:
        _stop(tb)
        raise
    return tb


def _stop(tb: Testbed) -> None:
    ceph.bed_down(tb)


@contextlib.contextmanager
def session_bed() -> Iterator[Testbed]:
    """The running bed; started on first use, stopped when its last user is done."""
    global _bed, _users
    if _bed is None:
        _bed = _start()
    _users += 1
    try:
        yield _bed
    finally:
        _users -= 1
        if _users == 0:
            bed, _bed = _bed, None
            _stop(bed)


def admin() -> Config:
    """The bed's Ceph as its admin (for checks the client key may not make)."""
    from gnt_storage.deploy.local import admin_config

    return admin_config(CEPH_DIR)
