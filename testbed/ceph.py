"""The test bed's Ceph: `gnt-storage local-cluster` bound to the root bridge's address.

Ceph runs in the root namespace (nodes reach it over the bridge), so its
lifetime nests inside the bridge's and around the nodes':
network_up, ceph up, nodes up ... nodes down, ceph down, network_down.
"""

from __future__ import annotations

import os
import subprocess
import sys

from testbed.ganeti import Testbed

GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")
DEFAULT_PORT = 13400


class CephError(RuntimeError):
    """local-cluster up or down failed."""


def local_cluster(action: str, ceph_dir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `gnt-storage local-cluster ACTION --dir ceph_dir ...`; raise with its stderr if asked to check."""
    try:
        res = subprocess.run([GNT_STORAGE, "local-cluster", action, "--dir", ceph_dir, *args], capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise CephError(f"gnt-storage local-cluster {action} --dir {ceph_dir} did not finish within 300 s") from None
    if check and res.returncode != 0:
        raise CephError(f"gnt-storage local-cluster {action} failed:\n{res.stderr.strip()}")
    return res


def up(ceph_dir: str, addr: str, port: int = DEFAULT_PORT) -> None:
    local_cluster("up", ceph_dir, "--port", str(port), "--addr", addr)


def bed_down(tb: Testbed) -> None:
    """The bed and its Ceph down, in order: nodes, Ceph, then the bridge (which waits for Ceph's sockets
    to close). A Ceph that did not stop is reported and keeps its bridge: a failure is never ignored."""
    tb.nodes_down()
    if tb.ceph_dir:
        res = local_cluster("down", tb.ceph_dir, check=False)
        if res.returncode != 0:
            raise CephError(f"gnt-storage local-cluster down --dir {tb.ceph_dir} failed, bridge {tb.bridge} kept: "
                            f"{res.stderr.strip() or 'exit ' + str(res.returncode)}")
    tb.network_down()
