"""Shared fixtures: one real local Ceph cluster per test session.

The cluster is started and stopped through the same command users run
(`gnt-storage local-cluster up|down`), so the fixture tests that too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ganeti_ceph import config
from ganeti_ceph.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
GNT_STORAGE = os.path.join(BIN, "gnt-storage")
TEST_DIR = os.environ.get("GANETI_CEPH_TEST_DIR", "/tmp/ganeti-ceph-test/cluster")
TEST_PORT = int(os.environ.get("GANETI_CEPH_TEST_PORT", "13300"))


@dataclass(frozen=True)
class LocalCluster:
    """The running test cluster: its dir, the client and admin configs."""

    dir: str
    client: Config
    admin: Config

    @property
    def conf(self) -> str:
        return self.client.conf


def gnt_storage(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([GNT_STORAGE, *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    from gnt_storage.deploy.local import admin_config

    res = gnt_storage("local-cluster", "up", "--dir", TEST_DIR, "--port", str(TEST_PORT))
    if res.returncode != 0:
        gnt_storage("local-cluster", "down", "--dir", TEST_DIR)
        pytest.fail(f"local-cluster up failed:\n{res.stderr}")
    try:
        client = config.load(os.path.join(TEST_DIR, "ganeti-ceph.yaml"))
        yield LocalCluster(TEST_DIR, client, admin_config(TEST_DIR))
    finally:
        res = gnt_storage("local-cluster", "down", "--dir", TEST_DIR)
        report_down(res, request.session.testsfailed)


def report_down(res: subprocess.CompletedProcess, tests_failed: int) -> None:
    """A failed `down` after failed tests is most likely their leftovers: a
    warning, shown after their failures, not an error that ends the run with
    a teardown traceback hiding them. After a green run it is the failure."""
    if res.returncode == 0:
        return
    text = f"local-cluster down failed (exit {res.returncode}): {res.stderr.strip()}"
    if tests_failed:
        warnings.warn(f"{text} (after {tests_failed} failed test(s); see those first)", stacklevel=1)
    else:
        pytest.fail(text, pytrace=False)
