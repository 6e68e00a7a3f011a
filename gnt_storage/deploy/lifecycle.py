"""A storage node's life in Ganeti: offline, back online (readd), remove.

Called only by our hook on the master (hooks/main.py), when Ganeti changes a
node of the storage group:

- offline (node-modify --offline yes, pre): refuse unless Ceph itself says
  the node's mon and OSDs can stop (`mon ok-to-stop`, `osd ok-to-stop`:
  quorum kept, no PG below min_size); mark its OSDs out and wait until no
  data is moving (bounded). A dead node is never contacted: its OSDs are
  marked down and out from here. A drain past its bound proceeds if Ceph
  says the daemons can stop, else vetoes with the OSDs left out, so the
  drain goes on and a retry succeeds. Its daemons stop only in the post
  phase (stop_offline), once Ganeti has committed to the change: a later
  pre hook or the opcode itself may still abort it, and nothing would
  start them again. An unreachable node has its OSDs marked down and out.
- online (node-modify --offline no or gnt-node add --readd, post): converge
  the group as init-distributed-storage does (files, stores, daemons), mark
  the node's OSDs in.
- drained (node-modify --drained yes, post): planned maintenance, not a
  drain: noout on its OSDs, so they may stop (reboot, upgrade) without data
  moving; --drained no (post) converges the node as online does and lifts
  noout.
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
from ganeti_ceph.errors import CephError, GanetiCephError, SshError, UsageError
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


def wait_data_settled(session: Session, timeout: float) -> int:
    """Wait up to `timeout` for no PG to move; the count still moving (0: settled)."""
    time.sleep(2.5)  # two mgr stat periods: the PG map must reflect the OSDs going out
    n = runner.until(time.monotonic() + timeout, lambda: moving_pgs(session.mon_command("status")),
                     lambda n: n <= 0, 0.5)
    return max(0, n)


def _osd_ids(state: dict[str, Any], node: str) -> list[str]:
    return [o["id"] for o in state["osds"] if o["node"] == node]


def up_osds(dump: dict[str, Any], ids: list[str]) -> list[str]:
    """Which of `ids` the osdmap (`osd dump`) has up (pure)."""
    up = {str(o["osd"]) for o in dump.get("osds", []) if o.get("up")}
    return [i for i in ids if i in up]


def drain_verdict(node: str, moving: int, bound: float, ok_to_stop: bool) -> str:
    """What a drain that did not settle within its bound means, in one line (pure).

    The OSDs stay out either way, so the drain goes on: a refusal is for now,
    not forever. If Ceph says the daemons can stop (every PG keeps min_size
    copies elsewhere), the node goes offline and recovery continues without it.
    """
    if ok_to_stop:
        return (f"{node}: {moving} PG(s) still moving after {bound:.0f} s; Ceph says its daemons can stop "
                "(the others hold enough copies): stopping them, recovery goes on (watch ceph -s)")
    return (f"node {node} cannot go offline yet: {moving} PG(s) still moving after {bound:.0f} s and stopping "
            "now would leave data below min_size; its OSDs stay out so the drain goes on: run "
            f"gnt-node modify --offline yes {node} again once ceph -s shows no recovery, or use "
            f"gnt-node modify --drained yes {node} (noout) for short maintenance")


def _ok_to_stop(session: Session, osds: list[str]) -> bool:
    try:
        session.mgr_command("osd ok-to-stop", ids=osds)
    except CephError:
        return False
    return True


def offline(node: GNode, ganeti: Ganeti, drain_timeout: float = 600.0) -> None:
    """The node leaves service (pre): drained (OSDs out), or, if dead, marked down and out from here; its
    daemons stop in stop_offline, after Ganeti committed."""
    state = distributed.load_state()
    if not storage_node(node.name, state):
        return
    assert state is not None
    osds, is_mon = _osd_ids(state, node.name), node.name in state["mons"]
    with Session(admin(state)) as session:
        up = up_osds(session.mon_command("osd dump"), osds)
        in_quorum = is_mon and node.short in session.mon_command("quorum_status").get("quorum_names", [])
        if not up and not in_quorum:
            _mark_gone(session, node, osds, "is down in Ceph (no OSD up, not in the mon quorum)")
            return
        try:
            if in_quorum:
                session.mon_command("mon ok-to-stop", ids=[node.short])
            if up:
                session.mgr_command("osd ok-to-stop", ids=up)
        except CephError as exc:
            raise UsageError(f"node {node.name} cannot go offline now: Ceph says stopping its daemons would lose "
                             f"quorum or leave data below min_size ({exc.message.split(': ', 2)[-1]}); "
                             "bring the other storage nodes back first") from None
        if osds:
            progress(f"{node.short}: marking {', '.join('osd.' + i for i in osds)} out and waiting for data to move")
            session.mon_command("osd out", ids=osds)
            moving = wait_data_settled(session, drain_timeout)
            if moving:
                ok = not up or _ok_to_stop(session, up)
                if not ok:
                    raise UsageError(drain_verdict(node.name, moving, drain_timeout, ok))
                progress(drain_verdict(node.short, moving, drain_timeout, ok))


def stop_offline(node: GNode, ganeti: Ganeti) -> None:
    """After Ganeti took the node offline (post): stop its daemons over SSH, or, if it cannot be reached,
    mark its OSDs down and out from here."""
    state = distributed.load_state()
    if not storage_node(node.name, state):
        return
    assert state is not None
    osds = _osd_ids(state, node.name)
    try:
        remote = distributed.connect_all([node], SshSettings(alias=ganeti.cluster_name()))[0]
    except SshError as exc:
        with Session(admin(state)) as session:
            _mark_gone(session, node, osds, f"is unreachable ({exc.message})")
        return
    try:
        req = {"action": "stop", "daemons": distributed.daemons_of(state, node.name)}
        stopped = distributed.call(remote, req)["changed"]
    finally:
        remote.close()
    progress(f"{node.short}: stopped {', '.join(stopped) or 'nothing (no daemon was running)'}")


def _mark_gone(session: Session, node: GNode, osds: list[str], why: str) -> None:
    """A dead or unreachable node: its OSDs down and out from the master, nothing sent to it."""
    if osds:
        session.mon_command("osd down", ids=osds)
        session.mon_command("osd out", ids=osds)
    names = ", ".join("osd." + i for i in osds) or "no OSD"
    progress(f"{node.short} {why}: marked {names} down and out without contacting it; Ceph rebuilds their "
             f"copies from the other nodes; readd it (gnt-node add --readd {node.name}) when it is back")


def online(node: GNode, ganeti: Ganeti) -> None:
    """Bring the node's daemons back (a new node in the group gets its OSDs), mark its OSDs in, lift noout."""
    state = distributed.load_state()
    if state is None or node.group != state["group"]:
        return
    if _osd_ids(state, node.name):  # first: the flag alone keeps health at HEALTH_WARN (OSD_FLAGS)
        set_noout(state, _osd_ids(state, node.name), False)
    distributed.init(state["group"], [], ganeti=ganeti)


def maintenance(node: GNode, ganeti: Ganeti, on: bool) -> None:
    """Planned maintenance (`gnt-node modify --drained yes`): noout on the node's OSDs.

    With noout, Ceph does not mark the OSDs out when they go down (a reboot, a
    package upgrade), so no data moves; PGs stay degraded until they return.
    `--drained no` converges the node as online() does (daemons that stopped
    start again) and lifts noout.
    """
    if not on:
        online(node, ganeti)
        return
    state = distributed.load_state()
    osds = _osd_ids(state, node.name) if state else []
    if state is not None and osds:
        set_noout(state, osds, True)
        progress(f"{node.short}: noout set on {', '.join('osd.' + i for i in osds)}: it may stop for maintenance "
                 f"without data moving; gnt-node modify --drained no {node.name} lifts it")


def set_noout(state: dict[str, Any], osds: list[str], on: bool) -> None:
    with Session(admin(state)) as session:
        session.mon_command("osd add-noout" if on else "osd rm-noout", ids=[f"osd.{i}" for i in osds])


def refuse_remove(node: GNode) -> None:
    state = distributed.load_state()
    if storage_node(node.name, state) and not node.offline:
        assert state is not None
        names = [f"{t}.{i}" for t, i in distributed.daemons_of(state, node.name)]
        raise UsageError(f"node {node.name} runs Ceph {', '.join(names)}: take it offline first "
                         f"(gnt-node modify --offline yes {node.name}), which moves its data away")


def forget(node_name: str) -> list[str]:
    """After removal: its mon leaves the monmap, its OSDs are purged when that loses no data; the ids of
    OSDs kept (a later forget, e.g. remove-distributed-storage's, tries them again). The state is saved
    after each step, so a failure keeps what was done."""
    state = distributed.load_state()
    if not storage_node(node_name, state):
        return []
    assert state is not None
    short = node_name.split(".")[0]
    kept = []
    with Session(admin(state)) as session:
        if node_name in state["mons"]:
            session.mon_command("mon remove", name=short)
            state["mons"].remove(node_name)
            distributed.save_state(state)
            progress(f"mon.{short} removed from the monmap")
        for osd in [o for o in state["osds"] if o["node"] == node_name]:
            try:
                session.mgr_command("osd safe-to-destroy", ids=[osd["id"]])
            except CephError:
                progress(f"osd.{osd['id']} still holds the only copy of some data: kept (down, out)")
                kept.append(osd["id"])
                continue
            # a mgr command in Ceph 16 (the ceph CLI sends it there): the mon answers EINVAL
            session.mgr_command("osd purge", id=int(osd["id"]), yes_i_really_mean_it=True)
            state["osds"].remove(osd)
            state["keys"].pop(f"osd.{osd['id']}", None)
            distributed.save_state(state)
            progress(f"osd.{osd['id']} purged")
    progress(f"re-run gnt-storage init-distributed-storage -s ceph {state['group']} to refresh ceph.conf "
             "on the remaining nodes")
    return kept


def find(ganeti: Ganeti, name: str) -> GNode:
    for n in ganeti.nodes():
        if n.name == name or n.short == name.split(".")[0]:
            return n
    raise UsageError(f"node {name} is not in the Ganeti cluster")

