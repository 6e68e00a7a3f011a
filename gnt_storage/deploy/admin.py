"""client.admin's Config for a cluster this package deployed: built here only.

A deployed cluster's directory (a local cluster's root, a node group master's
distributed.STATE_DIR) holds its ceph.conf and the admin keyring by Ceph's names.
"""

from __future__ import annotations

import os

from ganeti_ceph.config import Config, Timeouts

CONF = "ceph.conf"
KEYRING = "ceph.client.admin.keyring"


def files(directory: str) -> tuple[str, str]:
    """(ceph.conf, admin keyring) kept in `directory`."""
    return os.path.join(directory, CONF), os.path.join(directory, KEYRING)


def timeouts(wait: float = 0.0) -> Timeouts:
    """Bounds for deploying: monitors just started (or busy creating pools, checking ok-to-stop)
    answer slower than a client's defaults allow, and an OSD operation may take as long as the
    caller waits for OSDs, 30 s at least."""
    return Timeouts(connect=15, mon_op=30, osd_op=max(30.0, wait))


def config(directory: str, cluster: str, bounds: Timeouts | None = None) -> Config:
    """client.admin of the cluster whose files are in `directory`; `cluster` names it in messages."""
    conf, keyring = files(directory)
    return Config(conf=conf, keyring=keyring, client_id="admin", cluster=cluster, timeouts=bounds or Timeouts())
