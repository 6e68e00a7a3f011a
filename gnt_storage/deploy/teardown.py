"""`gnt-storage remove-distributed-storage GROUP`: the storage cluster goes, as pveceph purge does.

On the master, in order, each step re-runnable:

1. refuse while a node holding daemons is offline or gone, or this master
   lacks the state of a group tagged with a cluster's fsid;
2. connect to every node of the group (SSH), before anything changes;
3. refuse while any image (an instance disk, or one in the trash) lives in
   any of the cluster's pools: the proof is Ceph's own listing, so an
   unreachable cluster is a refusal too, never a guess; then fence new
   writes (write_fence: every pool at its object quota) and list again, so
   no image is made between the proof and the purge;
4. mark the state "removing": a re-run proves it again whenever Ceph
   answers, and goes on without the proof only when Ceph does not answer
   (the cluster may be half gone);
5. on every node of the group, in parallel over SSH: stop our daemons,
   forget their stores (an OSD device is zeroed only where its bluestore
   label names this cluster's OSD) and remove the files we wrote;
6. remove the master's state, admin files and the group's tags.

Options set with `gnt-storage -S` stay: they are defaults for a next init.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from ganeti_ceph.errors import GanetiCephError, UsageError
from ganeti_ceph.ganeti import Ganeti
from ganeti_ceph.log import progress
from ganeti_ceph.session import Session
from gnt_storage.deploy import admin, distributed, volume, write_fence
from gnt_storage.deploy.options import FSID_TAG_PREFIX, STORAGE_TAG
from gnt_storage.deploy.remote import SshSettings

PROVIDER_CONF = "/etc/ganeti/ceph.yaml"


def group_tags(tags: list[str]) -> list[str]:
    """The group's tags that make it the storage cluster (pure)."""
    return [t for t in tags if t == STORAGE_TAG or t.startswith(FSID_TAG_PREFIX)]


CEPH_POOLS = ("device_health_metrics", ".mgr")  # Ceph's own, made by its mgr


def images_verdict(group: str, ours: str, found: dict[str, list[str]]) -> str | None:
    """One line refusing the removal while images or pools not ours live in the cluster, or None (pure)."""
    foreign = sorted(p for p in found if p != ours and p not in CEPH_POOLS)
    if foreign:
        return (f"storage group {group} has pool(s) {', '.join(foreign)} that ganeti-ceph did not make: they may "
                "hold data; remove them first (ceph osd pool rm), nothing was changed")
    held = {pool: names for pool, names in found.items() if names}
    if not held:
        return None
    count = sum(len(n) for n in held.values())
    pool, names = next(iter(sorted(held.items())))
    return (f"storage group {group} still holds {count} RBD image(s) (e.g. {pool}/{names[0]}): instance disks "
            "may live there; remove those instances (gnt-instance remove) or images first, nothing was changed")


def _listing(session: Session) -> dict[str, list[str]]:
    """Every image and trash entry in every pool of the cluster, by pool (Ceph's own listing)."""
    import rbd

    found: dict[str, list[str]] = {}
    for pool in session.mon_command("osd pool ls") or []:
        with session.ioctx(pool) as ctx, session.errors(f"list images in {pool}"):
            found[pool] = [*rbd.RBD().list(ctx), *(f"{e['name']} (in the trash)" for e in rbd.RBD().trash_list(ctx))]
    return found


def fenced_empty(state: dict[str, Any], removing: bool) -> None:
    """Prove that no image lives in the cluster, with new writes fenced (write_fence) so none can be made
    before the purge; raise UsageError (fence lifted) if one does. Checked first unfenced, so a refusal
    does not stall the instances' I/O. If Ceph cannot be asked: a refusal, unless a run already marked
    the state removing (the cluster may be half gone): then a warning."""
    group, ours = state["group"], state["options"]["pool"]
    try:
        with Session(distributed.group_admin(group)) as session:
            verdict = images_verdict(group, ours, _listing(session))
            if verdict is None:
                before = write_fence.fence(session, sorted(session.mon_command("osd pool ls") or []))
                try:
                    verdict = images_verdict(group, ours, _listing(session))
                except BaseException:
                    write_fence.lift_quietly(session, before)
                    raise
                if verdict is not None:
                    write_fence.lift(session, before)
    except GanetiCephError as exc:
        if removing:
            progress(f"storage group {group}: Ceph does not answer ({exc.message}); an earlier run proved it "
                     "empty and began removing it: going on")
            return
        raise UsageError(f"cannot prove that no instance disk lives in storage group {group} "
                         f"({exc.message}); start its daemons (gnt-storage init-distributed-storage -s ceph "
                         f"{group}) and run this again") from None
    if verdict:
        raise UsageError(verdict)


def unavailable_verdict(group: str, node: str, in_ganeti: bool) -> str:
    """Why a node holding daemons stops the removal, and what to do, in one line (pure)."""
    if in_ganeti:
        return (f"node {node} holds Ceph daemons of group {group} but is offline: bring it back "
                f"(gnt-node modify --offline no {node}) and run this again; nothing was changed")
    return (f"node {node}, which Ganeti no longer has, still holds OSDs of group {group} that Ceph says are not "
            "safe to destroy yet (the only copy of some data, or Ceph did not answer): wait until ceph -s shows "
            f"no recovery and run this again, or add the node back (gnt-node add {node}); nothing was changed")


def forget_removed(state: dict[str, Any], in_ganeti: set[str]) -> dict[str, Any]:
    """Try again what gnt-node remove's hook could not finish for nodes Ganeti no longer has (their mon out
    of the monmap, their OSDs purged where Ceph says that loses no data); the state as it is now."""
    from gnt_storage.deploy import lifecycle

    gone = sorted(({o["node"] for o in state["osds"]} | set(state["mons"])) - in_ganeti)
    if not gone:
        return state
    for node in gone:
        try:
            lifecycle.forget(node)
        except GanetiCephError as exc:
            progress(f"{node} (removed from Ganeti): its daemons could not be forgotten ({exc.message})")
    return distributed.load_state() or state


def purge_request(state: dict[str, Any], node: str) -> dict[str, Any]:
    """What a node's purge gets: its daemons, its OSDs (id, device, uuid), the dirs and files we made there."""
    ds = distributed.daemons_of(state, node)
    osds = [o for o in state["osds"] if o["node"] == node]
    keyrings = [f"/etc/ceph/ceph.{e}.keyring" for e in ("client.admin", f"client.{state['options']['client']}")]
    made_by_volume = [o for o in osds if o["id"] in volume.made_by_ceph_volume(state)]
    files = ["/etc/ceph/ceph.conf", *keyrings, distributed.STATE, PROVIDER_CONF]
    files += [volume.DROPIN.format(o["id"]) for o in made_by_volume]
    if made_by_volume:
        files.append(volume.BOOTSTRAP_KEYRING)
    return {"action": "purge", "node": node, "daemons": ds, "osds": osds,
            "dirs": [f"/var/lib/ceph/{t}/ceph-{i}" for t, i in ds], "files": files}


def remove(group: str, ganeti: Ganeti | None = None, settings: SshSettings | None = None) -> int:
    ganeti = ganeti or Ganeti()
    groups = ganeti.require_group(group)
    tags = group_tags(groups[group])
    state = distributed.load_state()
    if state is not None and state["group"] != group:
        raise UsageError(f"node group {group} is not the storage cluster: this master keeps group "
                         f"{state['group']}'s ({distributed.STATE})")
    if state is None:
        if not tags:
            raise UsageError(f"node group {group} is not a storage cluster (no tag {STORAGE_TAG}, no "
                             f"{distributed.STATE} on this master)")
        fsids = [t[len(FSID_TAG_PREFIX):] for t in tags if t.startswith(FSID_TAG_PREFIX)]
        if fsids:  # a cluster was made: Ceph and the instances' disks may live on (a master failover)
            raise UsageError(f"node group {group} holds storage cluster {fsids[0]} but this master lacks "
                             f"{distributed.STATE}: copy it from a node of group {group} (same path) and run "
                             "this again; nothing was changed")
        ganeti.remove_group_tags(group, tags)
        progress(f"group {group} had no storage cluster on this master: its tags {', '.join(tags)} removed")
        return 0
    gnodes = {n.name: n for n in ganeti.nodes()}
    state = forget_removed(state, set(gnodes))
    holders = {m for m in state["mons"]} | {o["node"] for o in state["osds"]}
    members = sorted(holders | {n for n, g in gnodes.items() if g.group == group})
    unavailable = [n for n in members if n in holders and (n not in gnodes or gnodes[n].offline)]
    if unavailable:
        raise UsageError(unavailable_verdict(group, unavailable[0], unavailable[0] in gnodes))
    online = [gnodes[n] for n in members if n in gnodes and not gnodes[n].offline]
    for n in members:
        if n not in holders and n in gnodes and gnodes[n].offline:
            progress(f"{n} is offline: only files of ours may be left there ({PROVIDER_CONF}, /etc/ceph)")
    nodes = distributed.connect_all(online, settings or SshSettings(alias=ganeti.cluster_name()))
    try:
        fenced_empty(state, bool(state.get("removing")))  # after the connects: nothing fenced if one fails
        state["removing"] = True
        distributed.save_state(state)
        reports = distributed.on_all(nodes, lambda n: distributed.call(n, purge_request(state, n.name)))
    finally:
        for n in nodes:
            n.close()
    for n, r in zip(nodes, reports, strict=True):
        progress(f"{n.short}: " + "; ".join(r["changed"] or ["nothing of ours was left"]))
    for path in (*admin.files(distributed.STATE_DIR), distributed.STATE):
        if os.path.exists(path):
            os.unlink(path)
    if tags:
        ganeti.remove_group_tags(group, tags)
    print(f"storage cluster {state['fsid']} of group {group} removed")
    return 0


# -- the node's side (run by gnt_storage.deploy.node, action "purge") --------------------------------------

def purge_node(req: dict[str, Any]) -> dict[str, Any]:
    """Stop our daemons, zero our OSD devices (proven ours by their label), remove our dirs and files."""
    from gnt_storage.deploy import node
    from gnt_storage.deploy.devices import device_state, zero_head

    changed = [f"stopped {', '.join(s)}" for s in [node.stop(req)["changed"]] if s]
    for osd in req["osds"]:
        dev = volume.data_device(osd)
        if not os.path.exists(dev):
            continue
        st = device_state(dev, osd["uuid"])
        if st != "ours":
            changed.append(f"{dev} left as is ({st}, not osd.{osd['id']} of this cluster)")
            continue
        zero_head(dev, osd["uuid"])  # the label and bluefs superblock; never under a running OSD
        changed.append(f"osd.{osd['id']}'s label on {dev} zeroed")
    for d in req["dirs"]:
        if os.path.isdir(d):
            shutil.rmtree(d)
            changed.append(f"removed {d}")
    gone = [p for p in req["files"] if os.path.exists(p)]
    for p in gone:
        os.unlink(p)
    if gone:
        changed.append(f"removed {', '.join(gone)}")
    return {"changed": changed}
