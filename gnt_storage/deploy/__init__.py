"""Ceph deployment: the local cluster, a node group's cluster, its nodes.

This module is the deployment's API for code outside gnt_storage (the
hooks): what a master keeps and the node lifecycle, by node name. Each
function imports its module when called, so a hook that needs none of it
pays no import cost. Each that changes the cluster holds state_lock for its run.
"""

from __future__ import annotations

import time


def admin_files() -> tuple[str, str]:
    """(ceph.conf, admin keyring) that init-distributed-storage keeps on the master."""
    from gnt_storage.deploy import admin
    from gnt_storage.deploy.distributed import STATE_DIR

    return admin.files(STATE_DIR)


def storage_group_kept() -> bool:
    """Does this master keep a node group's storage cluster (init-distributed-storage)?"""
    from gnt_storage.deploy import distributed

    return distributed.load_state() is not None


def remove_storage(group: str) -> int:
    """`gnt-storage remove-distributed-storage GROUP`: refused while images live there, else purged."""
    from gnt_storage.deploy import state_lock, teardown

    with state_lock.held("remove-distributed-storage"):
        return teardown.remove(group)


def node_offline(name: str, drain_timeout: float) -> None:
    """The node goes offline (pre): refuse (UsageError) unless Ceph can spare it, else drain it."""
    from ganeti_ceph.ganeti import Ganeti
    from gnt_storage.deploy import lifecycle, state_lock

    ganeti = Ganeti()
    deadline = time.monotonic() + drain_timeout  # a wait for the lock is taken from the drain's bound
    with state_lock.held(f"the offline hook of {name}", wait=min(state_lock.WAIT_S, drain_timeout / 2)):
        lifecycle.offline(lifecycle.find(ganeti, name), ganeti, drain_timeout=max(1.0, deadline - time.monotonic()))


def node_stopped(name: str) -> None:
    """The node went offline (post): its daemons stop (a dead node's OSDs are marked down and out)."""
    from ganeti_ceph.ganeti import Ganeti
    from gnt_storage.deploy import lifecycle, state_lock

    ganeti = Ganeti()
    with state_lock.held(f"the offline hook of {name}", state_lock.POST_WAIT_S, instead=(
            f"{name} is offline but its Ceph daemons were not stopped: stop them there, or if it is dead "
            "mark its OSDs down and out (ceph osd down ID; ceph osd out ID)")):
        lifecycle.stop_offline(lifecycle.find(ganeti, name), ganeti)


def node_online(name: str) -> None:
    """The node serves again: converge the group, its OSDs in."""
    from ganeti_ceph.ganeti import Ganeti
    from gnt_storage.deploy import lifecycle, state_lock

    ganeti = Ganeti()
    with state_lock.held(f"the online hook of {name}"):
        lifecycle.online(lifecycle.find(ganeti, name), ganeti)


def node_maintenance(name: str, on: bool) -> None:
    """`gnt-node modify --drained yes|no`: noout on the node's OSDs, or the node converged and noout lifted."""
    from ganeti_ceph.ganeti import Ganeti
    from gnt_storage.deploy import lifecycle, state_lock

    ganeti = Ganeti()
    with state_lock.held(f"the drained hook of {name}"):
        lifecycle.maintenance(lifecycle.find(ganeti, name), ganeti, on)


def refuse_node_remove(name: str) -> None:
    """Refuse (UsageError) to remove a node that is online and runs Ceph daemons."""
    from ganeti_ceph.ganeti import Ganeti
    from gnt_storage.deploy import lifecycle

    lifecycle.refuse_remove(lifecycle.find(Ganeti(), name))


def forget_node(name: str) -> None:
    """After removal: its mon and OSDs leave the cluster where that loses no data."""
    from gnt_storage.deploy import lifecycle, state_lock

    with state_lock.held(f"the remove hook of {name}"):
        lifecycle.forget(name)
