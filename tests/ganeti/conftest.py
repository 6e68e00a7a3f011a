"""One real 2-node Ganeti cluster per session, on its own local Ceph.

Order matters: the test bed's root bridge carries 198.51.100.1, the address
Ceph binds to, so it comes first and goes last; the nodes come after Ceph
and go before it (their rbd-fuse mappings need the cluster to close).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from testbed import ceph
from testbed.ganeti import HOST_ADDR, Testbed

ROOT = os.environ.get("GANETI_TESTBED_DIR", "/tmp/ganeti-ceph-test")
CEPH_DIR = os.path.join(ROOT, "gceph")
WORKDIR = os.path.join(ROOT, "gtb")
CEPH_PORT = int(os.environ.get("GANETI_TESTBED_CEPH_PORT", "13400"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ganeti: needs the real 2-node Ganeti test bed (started once per session)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/ganeti drives real Ganeti nodes on a real Ceph cluster."""
    for item in items:
        if "/tests/ganeti/" in str(item.fspath):
            item.add_marker(pytest.mark.ganeti)
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    # `make test` installs Ganeti: a missing one is a broken set-up, not a reason to skip.
    if os.geteuid() != 0:
        pytest.fail("the Ganeti test bed needs root")
    if not shutil.which("gnt-cluster", path="/usr/sbin:/usr/bin") or not shutil.which("sshd", path="/usr/sbin"):
        pytest.fail("Ganeti or openssh-server is not installed (make test installs them: scripts/install-deps)")
    tb = Testbed(WORKDIR, CEPH_DIR, nodes=2)
    tb.nodes_down()  # remains of an interrupted session
    ceph.local_cluster("down", CEPH_DIR, check=False)
    tb.network_up()
    try:
        ceph.up(CEPH_DIR, HOST_ADDR, CEPH_PORT)
        tb.up()
        yield tb
    finally:
        tb.nodes_down()
        res = ceph.local_cluster("down", CEPH_DIR, check=False)
        tb.network_down()
        assert res.returncode == 0, res.stderr


@pytest.fixture(scope="session")
def ceph_admin(testbed: Testbed) -> Config:
    from gnt_storage.local import admin_config

    return admin_config(CEPH_DIR)
