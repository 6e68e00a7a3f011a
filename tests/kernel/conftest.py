"""One kernel VM and one Ceph for tests/kernel: krbd and rbd-nbd on a real Debian kernel.

The session brings up, in order: a bridge of its own (GANETI_KERNEL_TEST_NET,
a /24: host .1, guest .2), a local Ceph bound to the bridge's address
(GANETI_KERNEL_TEST_PORT), and the VM (testbed/kernel_vm.py), all under
GANETI_KERNEL_TEST_DIR; and takes them down in reverse. One boot serves every
test (TCG is slow); tests leave no mapping behind, and the session fails if
one did.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest

from ganeti_ceph import config
from testbed.kernel_vm import Bridge, KernelVM
from tests.conftest import LocalCluster, gnt_storage, report_down
from tests.kernel.guest import Guest

NET = os.environ.get("GANETI_KERNEL_TEST_NET", "198.18.200")  # not 192.0.2: this machine kind's eth0
PORT = os.environ.get("GANETI_KERNEL_TEST_PORT", "13500")
DIR = os.environ.get("GANETI_KERNEL_TEST_DIR", "/tmp/ganeti-ceph-kernel")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here talks to a real cluster (and boots a VM)."""
    for item in items:
        if "/tests/kernel/" in str(item.fspath):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    from gnt_storage.deploy.local import admin_config

    os.makedirs(DIR, mode=0o700, exist_ok=True)  # keyrings live in it
    os.chmod(DIR, 0o700)
    cluster_dir = os.path.join(DIR, "cluster")
    with Bridge(NET) as bridge:
        res = gnt_storage("local-cluster", "up", "--dir", cluster_dir, "--port", PORT, "--addr", bridge.addr)
        if res.returncode != 0:
            gnt_storage("local-cluster", "down", "--dir", cluster_dir)
            pytest.fail(f"local-cluster up on {bridge.addr} failed:\n{res.stderr}", pytrace=False)
        try:
            cluster = LocalCluster(cluster_dir, config.load(os.path.join(cluster_dir, "ganeti-ceph.yaml")),
                                   admin_config(cluster_dir))
            with KernelVM(os.path.join(DIR, "vm"), bridge, DIR) as vm:
                failed_before = request.session.testsfailed
                g = Guest(vm, cluster, DIR)
                yield g
                leftovers = g.leftovers()
                if leftovers:
                    text = "tests/kernel left behind:\n" + "\n".join(leftovers)
                    if request.session.testsfailed > failed_before:
                        warnings.warn(text + "\n(after failed tests: see those first)", stacklevel=1)
                    else:
                        pytest.fail(text, pytrace=False)
        finally:
            report_down(gnt_storage("local-cluster", "down", "--dir", cluster_dir), request.session.testsfailed)
