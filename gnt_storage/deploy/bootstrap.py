"""Bring-up steps of a Ceph cluster, shared by local-cluster and a node group (distributed).

Each step is one function: render files, mkfs a mon or OSD, register OSDs,
create the pool and wait for health. Mon commands go through the shared
Session (in-process librados, bounded by timeouts), never the `ceph` CLI.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ganeti_ceph import atomic, runner
from ganeti_ceph.errors import CephUnavailable
from ganeti_ceph.log import progress
from ganeti_ceph.session import Session
from gnt_storage.deploy import cephconf
from gnt_storage.deploy.cephconf import ClusterSpec


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write atomically with `mode` set before any secret reaches the disk."""
    atomic.write(path, text, mode)


def osd_ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


def write_cluster_files(spec: ClusterSpec, osds: list[str], mgr_id: str) -> None:
    """conf, keyrings (admin, Ganeti's client, mon seed, one per daemon)."""
    keys = {name: cephconf.new_key() for name in ("mon.", "client.admin", f"client.{spec.client_id}")}
    admin = {"client.admin": (keys["client.admin"], cephconf.ADMIN_CAPS)}
    client_name = f"client.{spec.client_id}"
    client = {client_name: (keys[client_name], cephconf.rbd_client_caps(spec.pool))}
    daemons = {f"mgr.{mgr_id}": (cephconf.new_key(), cephconf.MGR_CAPS)}
    daemons.update({f"osd.{i}": (cephconf.new_key(), cephconf.OSD_CAPS) for i in osds})
    # The mon seeds its auth database from this keyring at mkfs, so every
    # daemon and client key exists before the mon first answers.
    seed = {"mon.": (keys["mon."], cephconf.MON_CAPS), **admin, **client, **daemons}
    for sub in ("run", "log", "crash", "mon", "mgr", "osd"):
        os.makedirs(spec.path(sub), mode=0o750, exist_ok=True)
    write_file(spec.conf_path, cephconf.render_conf(spec))
    write_file(spec.path("seed.keyring"), cephconf.keyring(seed), 0o600)
    write_file(spec.keyring_path("client.admin"), cephconf.keyring(admin), 0o600)
    write_file(spec.keyring_path(client_name), cephconf.keyring(client), 0o600)
    for entity, entry in daemons.items():
        kind, ident = entity.split(".", 1)
        os.makedirs(spec.data_dir(kind, ident), mode=0o750, exist_ok=True)
        write_file(os.path.join(spec.data_dir(kind, ident), "keyring"), cephconf.keyring({entity: entry}), 0o600)


def mkfs_all(spec: ClusterSpec, osds: list[str], env: dict[str, str]) -> dict[str, str]:
    """monmap, then mon and OSD mkfs in parallel (OSDs need no running mon)."""
    monmap = spec.path("monmap")
    argv = ["monmaptool", "--create", "--clobber", "--fsid", spec.fsid]
    for mon in spec.mons:
        argv += ["--addv", mon.id, mon.addrvec]
    runner.run([*argv, monmap], "create monmap", env=env)
    uuids = {i: str(uuid.uuid4()) for i in osds}
    jobs: list[Callable[[], str]] = [
        lambda m=m: runner.run(["ceph-mon", "-c", spec.conf_path, "--mkfs", "-i", m.id, "--monmap", monmap,
                                "--keyring", spec.path("seed.keyring")], f"mkfs mon.{m.id}", env=env)
        for m in spec.mons
    ]
    jobs += [
        lambda i=i: runner.run(["ceph-osd", "-c", spec.conf_path, "--mkfs", "-i", i, "--osd-uuid", uuids[i],
                                "--no-mon-config"], f"mkfs osd.{i}", env=env)
        for i in osds
    ]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        for fut in [pool.submit(j) for j in jobs]:
            fut.result()
    return uuids


def require_modern_clients(session: Session) -> None:
    """Mimic or newer clients only: RBD clones then need no snapshot protection (clone v2)."""
    session.mon_command("osd set-require-min-compat-client", version="mimic", yes_i_really_mean_it=True)


def register_osds(session: Session, uuids: dict[str, str]) -> None:
    for osd_id, osd_uuid in uuids.items():
        session.mon_command("osd new", uuid=osd_uuid, id=int(osd_id))


# The mgr's devicehealth module creates this pool once it is active; made
# here, its PG peers with the others instead of seconds later.
DEVICE_HEALTH_POOL = ("device_health_metrics", 1, "mgr_devicehealth")


def create_pools(session: Session, spec: ClusterSpec) -> None:
    """The pool for Ganeti disks (replicated, fixed pg_num, tagged rbd), and the mgr's."""
    existing = set(session.mon_command("osd pool ls") or [])
    for name, pg_num, app in ((spec.pool, spec.pg_num, "rbd"), DEVICE_HEALTH_POOL):
        if name not in existing:
            session.mon_command("osd pool create", pool=name, pg_num=pg_num, pgp_num=pg_num,
                                pool_type="replicated")
        session.mon_command("osd pool application enable", pool=name, app=app, yes_i_really_mean_it=True)


def rbd_pool_init(session: Session, pool: str) -> None:
    """What `rbd pool init` does, in-process; waits for the pool's PGs to go active."""
    import rbd

    with session.ioctx(pool) as ioctx, session.errors(f"rbd pool init {pool}"):
        rbd.RBD().pool_init(ioctx, True)


def health_line(health: dict) -> str:
    """`HEALTH_WARN: PG_AVAILABILITY (...); MGR_DOWN (...)` from health output."""
    checks = health.get("checks") or {}
    parts = [f"{name} ({c.get('summary', {}).get('message', '')})" for name, c in sorted(checks.items())]
    return health.get("status", "HEALTH_UNKNOWN") + (": " + "; ".join(parts) if parts else "")


def settled_line(status: dict) -> str:
    """One line for `status` output; exactly "HEALTH_OK" only when truly settled.

    The mon says HEALTH_OK before the mgr has reported any PG, so we also
    require an active mgr, every OSD up and in, and every PG active+clean.
    """
    line = health_line(status.get("health", {}))
    osd = status.get("osdmap", {})
    pgs = status.get("pgmap", {})
    clean = sum(s["count"] for s in pgs.get("pgs_by_state", []) if s["state_name"] == "active+clean")
    waits = []
    if not status.get("mgrmap", {}).get("available"):
        waits.append("no active mgr yet")
    total = osd.get("num_osds", 0)
    if not total or osd.get("num_up_osds") != total or osd.get("num_in_osds") != total:
        waits.append(f"OSDs {osd.get('num_up_osds', 0)} up / {osd.get('num_in_osds', 0)} in / {osd.get('num_osds', 0)}")
    if not pgs.get("num_pgs") or clean != pgs.get("num_pgs"):
        waits.append(f"PGs {clean}/{pgs.get('num_pgs', 0)} active+clean")
    return line if not waits else f"{line} ({'; '.join(waits)})"


def boot_epochs(session: Session) -> dict[str, int]:
    """OSD id -> the osdmap epoch it last came up at (`up_from`; 0: it never booted)."""
    return {str(o["osd"]): int(o.get("up_from", 0)) for o in session.mon_command("osd dump").get("osds", [])}


def wait_booted(session: Session, before: dict[str, int], timeout: float, poll: float = 0.1) -> None:
    """Until every OSD in `before` has come up again after it (a newer up_from). A monitor restarted
    with them still has them up from before its own stop, and its last PG report says active+clean:
    health reads HEALTH_OK before any restarted OSD has booted."""
    def late_ones() -> list[str]:
        now = boot_epochs(session)
        return sorted(i for i, epoch in before.items() if now.get(i, 0) <= epoch)

    late = runner.until(time.monotonic() + timeout, late_ones, lambda late: not late, poll)
    if late:
        raise CephUnavailable(f"osd.{', osd.'.join(late)} did not boot within {timeout:.0f} s")


def wait_healthy(session: Session, timeout: float, poll: float = 0.1) -> str:
    """Poll status until settled HEALTH_OK, printing each new state as progress."""
    last = ""

    def probe() -> str:
        nonlocal last
        line = settled_line(session.mon_command("status"))
        if line != last:
            progress(f"  health: {line}")
            last = line
        return line

    line = runner.until(time.monotonic() + timeout, probe, lambda line: line == "HEALTH_OK", poll)
    if line != "HEALTH_OK":
        raise CephUnavailable(f"cluster did not reach HEALTH_OK within {timeout:.0f} s; last: {line}")
    return line
