"""A storage node's life in Ganeti: offline, back online (readd), remove.

Called only by our hook on the master (hooks/main.py), when Ganeti changes a
node of the storage group:

- offline (node-modify --offline yes, pre): refuse unless Ceph itself says
  the node's mon and OSDs can stop (`mon ok-to-stop`, `osd ok-to-stop`:
  quorum kept, no PG below min_size); mark its OSDs out, wait until no data
  is moving, then stop its daemons over SSH. A refusal vetoes Ganeti's job.
- online (node-modify --offline no or gnt-node add --readd, post): converge
  the group as init-distributed-storage does (files, stores, daemons), mark
  the node's OSDs in.
- remove (gnt-node remove, pre): refused while the node is online and runs
  Ceph daemons; once offline, post: its mon leaves the monmap and its OSDs
  are purged when Ceph says that destroys no data.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ganeti_ceph import runner
from ganeti_ceph.config import Config
from ganeti_ceph.errors import CephError, GanetiCephError, UsageError
from ganeti_ceph.ganeti import Ganeti, GNode
from ganeti_ceph.log import progress
from ganeti_ceph.session import Session
from gnt_storage.deploy import distributed
from gnt_storage.deploy.remote import SshSettings

# PG states that mean data is still moving or not yet served.
MOVING = ("peering", "activating", "backfill", "recover", "unknown", "creating")


def storage_node(node: str, state: dict[str, Any] | None) -> bool:
    return bool(state) and bool(distributed.daemons_of(state, node))  # type: ignore[arg-type]


def admin(state: dict[str, Any]) -> Config:
    cfg = distributed.group_admin(state["group"])
    if not os.path.exists(cfg.conf) or not os.path.exists(cfg.keyring):
        raise GanetiCephError(f"{cfg.conf} or its admin keyring is missing on this master; run "
                              f"gnt-storage init-distributed-storage -s ceph {state['group']} again")
    return cfg


def moving_pgs(status: dict[str, Any]) -> int:
    """PGs not yet active or still moving data (pure)."""
    pgs = status.get("pgmap", {}).get("pgs_by_state", [])
    return sum(s["count"] for s in pgs if "active" not in s["state_name"]
               or any(m in s["state_name"] for m in MOVING))


def wait_data_settled(session: Session, timeout: float) -> None:
    time.sleep(2.5)  # two mgr stat periods: the PG map must reflect the OSDs going out
    n = runner.until(time.monotonic() + timeout, lambda: moving_pgs(session.mon_command("status")),
                     lambda n: n <= 0, 0.5)
    if n > 0:
        raise CephError(f"data is still moving after {timeout:.0f} s ({n} PGs); try again later")


def _osd_ids(state: dict[str, Any], node: str) -> list[str]:
    return [o["id"] for o in state["osds"] if o["node"] == node]


def offline(node: GNode, ganeti: Ganeti, drain_timeout: float = 600.0) -> None:
    state = distributed.load_state()
    if not storage_node(node.name, state):
        return
    assert state is not None
    osds, is_mon = _osd_ids(state, node.name), node.name in state["mons"]
    with Session(admin(state)) as session:
        try:
            if is_mon:
                session.mon_command("mon ok-to-stop", ids=[node.short])
            if osds:
                session.mgr_command("osd ok-to-stop", ids=osds)
        except CephError as exc:
            raise UsageError(f"node {node.name} cannot go offline now: Ceph says stopping its daemons would lose "
                             f"quorum or leave data below min_size ({exc.message.split(': ', 2)[-1]}); "
                             "bring the other storage nodes back first") from None
        if osds:
            progress(f"{node.short}: marking {', '.join('osd.' + i for i in osds)} out and waiting for data to move")
            session.mon_command("osd out", ids=osds)
            try:
                wait_data_settled(session, drain_timeout)
            except CephError:
                session.mon_command("osd in", ids=osds)
                raise
    remote = distributed.connect_all([node], SshSettings(alias=ganeti.cluster_name()))[0]
    try:
        req = {"action": "stop", "daemons": distributed.daemons_of(state, node.name)}
        stopped = distributed.call(remote, req)["changed"]
    finally:
        remote.close()
    progress(f"{node.short}: stopped {', '.join(stopped) or 'nothing (no daemon was running)'}")


def online(node: GNode, ganeti: Ganeti) -> None:
    """Bring the node's daemons back (a new node in the group gets its OSDs), then mark its OSDs in."""
    state = distributed.load_state()
    if state is None or node.group != state["group"]:
        return
    distributed.init(state["group"], [], ganeti=ganeti)


def refuse_remove(node: GNode) -> None:
    state = distributed.load_state()
    if storage_node(node.name, state) and not node.offline:
        assert state is not None
        names = [f"{t}.{i}" for t, i in distributed.daemons_of(state, node.name)]
        raise UsageError(f"node {node.name} runs Ceph {', '.join(names)}: take it offline first "
                         f"(gnt-node modify --offline yes {node.name}), which moves its data away")


def forget(node_name: str) -> None:
    """After removal: its mon leaves the monmap, its OSDs are purged when that loses no data."""
    state = distributed.load_state()
    if not storage_node(node_name, state):
        return
    assert state is not None
    short = node_name.split(".")[0]
    with Session(admin(state)) as session:
        if node_name in state["mons"]:
            session.mon_command("mon remove", name=short)
            state["mons"].remove(node_name)
            progress(f"mon.{short} removed from the monmap")
        for osd in [o for o in state["osds"] if o["node"] == node_name]:
            try:
                session.mgr_command("osd safe-to-destroy", ids=[osd["id"]])
            except CephError:
                progress(f"osd.{osd['id']} still holds the only copy of some data: kept (down, out)")
                continue
            session.mon_command("osd purge", id=int(osd["id"]), yes_i_really_mean_it=True)
            state["osds"].remove(osd)
            state["keys"].pop(f"osd.{osd['id']}", None)
            progress(f"osd.{osd['id']} purged")
    distributed.save_state(state)
    progress(f"re-run gnt-storage init-distributed-storage -s ceph {state['group']} to refresh ceph.conf "
             "on the remaining nodes")


def find(ganeti: Ganeti, name: str) -> GNode:
    for n in ganeti.nodes():
        if n.name == name or n.short == name.split(".")[0]:
            return n
    raise UsageError(f"node {name} is not in the Ganeti cluster")

