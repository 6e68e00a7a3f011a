"""One real 2-node Ganeti cluster per session, on its own local Ceph (testbed.shared: the same
bed serves tests/reliability, started once for both)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ganeti_ceph.config import Config
from testbed import shared
from testbed.ganeti import Testbed

ROOT, CEPH_DIR, WORKDIR, CEPH_PORT = shared.ROOT, shared.CEPH_DIR, shared.WORKDIR, shared.CEPH_PORT


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
    with shared.session_bed() as tb:
        yield tb


@pytest.fixture(scope="session")
def ceph_admin(testbed: Testbed) -> Config:
    return shared.admin()
