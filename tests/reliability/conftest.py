"""The fault suite (doc/reliability.md): scenarios on the real test beds, one ledger for all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.ceph.provider_env import mounts_under
from tests.conftest import LocalCluster
from tests.reliability.bed import Bed
from tests.reliability.ledger import OUT_ENV, Ledger
from tests.reliability.secrets_watch import secrets_final, secrets_watch  # noqa: F401 (session-wide, autouse)

LEDGER = Ledger()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.rows:
        return
    terminalreporter.section("fault suite (doc/reliability.md)")
    terminalreporter.write_line(LEDGER.table())
    terminalreporter.write_line("totals: " + ", ".join(f"{k} {v}" for k, v in LEDGER.totals().items()))
    out = os.environ.get(OUT_ENV)
    if out:
        LEDGER.dump(out)
        terminalreporter.write_line(f"written to {out}")


@pytest.fixture(scope="session")
def bed(local_cluster: LocalCluster) -> Iterator[Bed]:
    """The provider installed with the fault suite's small timeouts, on the session's cluster.

    Its files sit next to the cluster's dir (not in pytest's shared temp root,
    which concurrent sessions prune)."""
    base = tempfile.mkdtemp(prefix="reliability-", dir=os.path.dirname(os.path.abspath(local_cluster.dir)))
    b = Bed(local_cluster, base)
    try:
        yield b
    finally:
        b.close()
        if not mounts_under(base):  # never recurse into a live rbd-fuse mount: unlink there removes images
            shutil.rmtree(base, ignore_errors=True)
