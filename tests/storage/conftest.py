"""Three real Ganeti nodes in namespaces, with no Ceph at all, for init-distributed-storage.

Each node has its own network namespace, sshd, hostname and private
/etc, /srv, /var/lib/ceph, /var/log/ceph and /run (testbed/). The bed has
its own bridge and network, so it runs beside the 2-node bed of tests/ganeti.
OSD "disks" are 10 GiB sparse files in each node's /srv: this kernel has
no spare block devices (loop devices are checked the same way on real hosts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from testbed.ganeti import Testbed

ROOT = os.environ.get("GANETI_STORAGE_TEST_DIR", "/tmp/ganeti-ceph-test/storage")
BED_ID = os.environ.get("GANETI_STORAGE_TEST_ID", "5")
NET = os.environ.get("GANETI_STORAGE_TEST_NET", "198.18.5")
DISK = "/srv/osd0.img"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/storage/" in str(item.fspath):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.fail("the storage test bed needs root")
    if not shutil.which("gnt-cluster", path="/usr/sbin:/usr/bin"):
        pytest.fail("Ganeti is not installed (make test installs it: scripts/install-deps)")
    tb = Testbed(ROOT, None, nodes=3, bed_id=BED_ID, net=NET)
    tb.nodes_down()
    try:
        tb.up()
        for i in range(3):
            tb.run(i, ["truncate", "-s", "10G", DISK])
        yield tb
    finally:
        tb.down()
