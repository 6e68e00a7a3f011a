"""The test bed's Ceph: `gnt-storage local-cluster` bound to the root bridge's address.

Ceph runs in the root namespace (nodes reach it over the bridge), so its
lifetime nests inside the bridge's and around the nodes':
network_up, ceph up, nodes up ... nodes down, ceph down, network_down.
"""

from __future__ import annotations

import os
import subprocess
import sys

GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")
DEFAULT_PORT = 13400


class CephError(RuntimeError):
    """local-cluster up or down failed."""


def local_cluster(action: str, ceph_dir: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `gnt-storage local-cluster ACTION --dir ceph_dir ...`; raise with its stderr if asked to check."""
    res = subprocess.run([GNT_STORAGE, "local-cluster", action, "--dir", ceph_dir, *args], capture_output=True,
                         text=True, timeout=300, stdin=subprocess.DEVNULL, check=False)
    if check and res.returncode != 0:
        raise CephError(f"gnt-storage local-cluster {action} failed:\n{res.stderr.strip()}")
    return res


def up(ceph_dir: str, addr: str, port: int = DEFAULT_PORT) -> None:
    local_cluster("up", ceph_dir, "--port", str(port), "--addr", addr)


def down(ceph_dir: str) -> None:
    local_cluster("down", ceph_dir)
