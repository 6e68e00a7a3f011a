"""The node side of init-distributed-storage: one JSON request in, one JSON report out.

The master runs `python -I -m gnt_storage.deploy.node` on each node over SSH with a
request on stdin (see `gnt_storage.deploy.distributed`), so every node does its
part in one round trip and the convergence logic runs here, in Python, not
in shell strings. Every step checks first and only changes what differs:
a re-run reports everything "in place". Stores are marked done only after
mkfs succeeded. A device with this OSD's label but no marker is made anew
only when the osdmap (read by the master) says the OSD never booted: an
interrupted first run. Otherwise the store holds data (a node reinstalled
with its disk kept): it is adopted, never zeroed.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import sys
import tempfile
from typing import Any

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError, run_main
from gnt_storage.deploy import bootstrap, daemons, volume
from gnt_storage.deploy.daemons import Daemon
from gnt_storage.deploy.devices import TOOL_ENV, device_state, read_label, zero_head

CONF = "/etc/ceph/ceph.conf"
KRBD_BESIDE_OSDS = ("krbd",)  # mappers a node running OSDs does not default to
RUN_DIR = "/run/ceph"
LOG_DIR = "/var/log/ceph"
DONE = "ganeti-ceph.done"  # in a mon or OSD directory: its mkfs completed
USER = "ceph"
REQUIRED = ("ceph-mon", "ceph-mgr", "ceph-osd", "monmaptool")


def data_dir(kind: str, ident: str) -> str:
    return f"/var/lib/ceph/{kind}/ceph-{ident}"


def systemd() -> bool:
    """Where systemd runs, Ceph's packaged units start our daemons (same paths)."""
    return os.path.isdir("/run/systemd/system")


def ids(user: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid
    except KeyError:
        raise GanetiCephError(f"user {user} does not exist; install Ceph's packages (ceph-common creates it)"
                              ) from None


# -- probe ---------------------------------------------------------------------

def probe(req: dict[str, Any]) -> dict[str, Any]:
    missing = [b for b in REQUIRED if not shutil.which(b, path=runner.SYSTEM_PATH)]
    devices = {o["dev"]: ("ours" if os.path.exists(os.path.join(data_dir("osd", o["id"]), DONE))
                          else osd_state(o)) for o in req.get("osds", [])}
    osds = {o["id"]: {"volume": True} for o in req.get("osds", []) if volume.is_volume(o)}
    return {"missing": missing, "devices": devices, "systemd": systemd(), "running": running(req), "osds": osds}


def osd_state(osd: dict[str, Any]) -> str:
    if not volume.is_volume(osd):
        if osd.get("db") or osd.get("wal"):
            return "not usable: a file; ceph:db and ceph:wal need the OSD's data on a block device (ceph-volume)"
        return device_state(osd["dev"], osd["uuid"])
    try:
        return volume.state(volume.with_stable_names(osd))
    except GanetiCephError as exc:
        return f"not usable: {exc.message}"


# -- apply: files, directories, stores ----------------------------------------

def put_file(path: str, content: str, mode: int, owner: str) -> bool:
    """Write `path` when content, mode or owner differ; True if it changed."""
    uid, gid = ids(owner)
    try:
        st = os.stat(path)
        with open(path) as fh:
            same = fh.read() == content
        if same and stat.S_IMODE(st.st_mode) == mode and (st.st_uid, st.st_gid) == (uid, gid):
            return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    bootstrap.write_file(path, content, mode)
    os.chown(path, uid, gid)
    return True


def make_dir(path: str, mode: int, owner: str) -> None:
    uid, gid = ids(owner)
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def _ceph(argv: list[str], what: str) -> None:
    runner.run(argv, what, 300, env=TOOL_ENV)


def mkfs_mon(mon: dict[str, Any], user: str) -> bool:
    d = data_dir("mon", mon["id"])
    if os.path.exists(os.path.join(d, DONE)):
        return False
    shutil.rmtree(d, ignore_errors=True)  # an unfinished mkfs: this mon never ran
    make_dir(d, 0o750, user)
    with tempfile.TemporaryDirectory() as tmp:
        seed, monmap = os.path.join(tmp, "seed.keyring"), os.path.join(tmp, "monmap")
        bootstrap.write_file(seed, mon["seed"], 0o600)
        os.chown(tmp, *ids(user))
        os.chown(seed, *ids(user))
        _ceph(["monmaptool", "--create", "--clobber", "--fsid", mon["fsid"], *mon["addv"], monmap], "create monmap")
        os.chown(monmap, *ids(user))
        _ceph(["ceph-mon", "-c", CONF, "--mkfs", "-i", mon["id"], "--monmap", monmap, "--keyring", seed,
               "--setuser", user, "--setgroup", user], f"mkfs mon.{mon['id']}")
    put_file(os.path.join(d, DONE), "", 0o644, user)
    return True


def osd_plan(state: str, up_from: int | None, finished: bool = False) -> str:
    """What to do with an OSD device that has no done-marker here (pure).

    "mkfs" an empty device; "adopt" our label of a finished store (mkfs_done:
    it may have booted and hold data, whatever the osdmap says now: after
    `ceph osd purge` and a re-registration up_from is 0 again); "redo" an
    unfinished store of ours only when the osdmap also says this OSD never
    booted (up_from 0); "pending" when the master has not read the osdmap
    yet; else "refuse".
    """
    if state == "empty":
        return "mkfs"
    if state != "ours":
        return "refuse"
    if finished:
        return "adopt"
    if up_from is None:
        return "pending"
    return "redo" if up_from == 0 else "refuse"


def label_problems(label: dict[str, str], osd: dict[str, Any]) -> list[str]:
    """How a bluestore label differs from a finished store of `osd` (pure)."""
    want = {"osd_uuid": osd["uuid"], "whoami": str(osd["id"]), "ceph_fsid": osd["fsid"], "mkfs_done": "yes",
            "ready": "ready"}
    return [f"{k} {label.get(k)!r} (expected {v!r})" for k, v in want.items() if label.get(k) != v]


def _refusal(osd: dict[str, Any], state: str) -> GanetiCephError:
    return GanetiCephError(f"osd.{osd['id']}: {osd['dev']} is {state}" + (
        " with an unfinished store although the osdmap says it booted; refusing to overwrite it: check the "
        "device" if state == "ours" else ""))


def volume_osd(osd: dict[str, Any], user: str, records: dict[str, Any]) -> str:
    """An OSD on a block device, through ceph-volume: prepared once the mons run (it registers the
    OSD), adopted (activated, never re-made) when the device holds a finished store of this cluster's osd.N."""
    osd = volume.with_stable_names(osd)
    state = volume.state(osd)
    finished = state == "ours" and read_label(osd["dev"]).get("mkfs_done") == "yes"
    plan = osd_plan(state, osd.get("up_from"), finished)
    if plan == "refuse":
        raise _refusal(osd, state)
    if plan == "pending" or osd.get("up_from") is None:
        return "pending"  # ceph-volume asks the mons for the OSD's id and the monmap
    if plan == "redo":  # our prepare never finished and the osdmap says it never booted: nothing was stored
        volume.forget_unfinished(osd)
    if plan != "adopt":  # links and keyring of an unfinished try, no data: ceph-volume refuses to link over them
        shutil.rmtree(data_dir("osd", osd["id"]), ignore_errors=True)
    records[osd["id"]] = {"volume": True, "stable": osd["stable"]}
    if plan == "adopt":
        volume.activate(osd)
        records[osd["id"]]["uuid"] = read_label(osd["dev"])["osd_uuid"]
        done = f"osd.{osd['id']} adopted from {osd['dev']} (its finished store kept)"
    else:
        records[osd["id"]]["uuid"] = volume.prepare(osd)
        volume.activate(osd)
        done = f"osd.{osd['id']} prepared by ceph-volume on {osd['dev']}" + (
            " (made anew: it never booted)" if plan == "redo" else "")
    put_file(os.path.join(data_dir("osd", osd["id"]), DONE), "", 0o644, user)
    return done


def mkfs_osd(osd: dict[str, Any], user: str, records: dict[str, Any] | None = None) -> str:
    """Make, redo or adopt an OSD's store; "" if in place, "pending" if the osdmap is needed first."""
    d = data_dir("osd", osd["id"])
    if os.path.exists(os.path.join(d, DONE)):
        return ""
    if volume.is_volume(osd):
        return volume_osd(osd, user, {} if records is None else records)
    state = device_state(osd["dev"], osd["uuid"])
    finished = state == "ours" and read_label(osd["dev"]).get("mkfs_done") == "yes"
    plan = osd_plan(state, osd.get("up_from"), finished)
    if plan == "refuse":
        raise _refusal(osd, state)
    if plan == "pending":
        return plan
    if plan == "adopt":
        adopt_osd(osd, user)
        return f"osd.{osd['id']} adopted from {osd['dev']} (its finished store kept)"
    uid, gid = ids(user)
    if plan == "redo":  # our own mkfs never finished and the osdmap says it never booted: nothing was stored
        zero_head(osd["dev"], osd["uuid"])
    shutil.rmtree(d, ignore_errors=True)
    make_dir(d, 0o750, user)
    os.symlink(osd["dev"], os.path.join(d, "block"))
    os.chown(osd["dev"], uid, gid)
    put_file(os.path.join(d, "keyring"), osd["keyring"], 0o600, user)
    _ceph(["ceph-osd", "-c", CONF, "--mkfs", "-i", osd["id"], "--osd-uuid", osd["uuid"], "--no-mon-config",
           "--setuser", user, "--setgroup", user], f"mkfs osd.{osd['id']} on {osd['dev']}")
    put_file(os.path.join(d, DONE), "", 0o644, user)
    return f"osd.{osd['id']} store on {osd['dev']}" + (" (made anew: it never booted)" if plan == "redo" else "")


def adopt_osd(osd: dict[str, Any], user: str) -> None:
    """Give a booted OSD's kept store its directory back (what ceph-volume activate does); never writes the device."""
    dev, d = osd["dev"], data_dir("osd", osd["id"])
    bad = label_problems(read_label(dev), osd)
    if bad:
        raise GanetiCephError(f"osd.{osd['id']}: {dev} holds this OSD's label but not a finished store of it "
                              f"({'; '.join(bad)}); refusing to adopt or overwrite it: check the device")
    uid, gid = ids(user)
    make_dir(d, 0o750, user)
    link = os.path.join(d, "block")
    if os.path.lexists(link) and os.readlink(link) != dev:
        os.unlink(link)
    if not os.path.lexists(link):
        os.symlink(dev, link)
    os.chown(dev, uid, gid)
    _ceph(["ceph-bluestore-tool", "prime-osd-dir", "--dev", dev, "--path", d, "--no-mon-config"],
          f"restore the directory of osd.{osd['id']} from {dev}")
    for name in os.listdir(d):
        os.lchown(os.path.join(d, name), uid, gid)
    put_file(os.path.join(d, "keyring"), osd["keyring"], 0o600, user)
    put_file(os.path.join(d, DONE), "", 0o644, user)


def provider_config(cfg: dict[str, Any], node: str) -> str:
    """/etc/ganeti/ceph.yaml: this node's client config, mapper detected here; never krbd beside OSDs
    (the kernel client on an OSD host can deadlock under memory pressure, Ceph warns)."""
    from ganeti_ceph import config as gconfig
    from ganeti_ceph.rbd.mappers import detect

    mapper = detect(avoid=KRBD_BESIDE_OSDS if cfg.get("osds") else ())
    return gconfig.dump(gconfig.Config(conf=CONF, keyring=cfg["keyring"], client_id=cfg["client"],
                                       cluster=cfg["cluster"], pool=cfg["pool"], mapper=mapper, node=node))


def apply(req: dict[str, Any]) -> dict[str, Any]:
    user = req.get("user", USER)
    changed: list[str] = []
    for path, mode, owner in ((RUN_DIR, 0o770, user), (LOG_DIR, 0o2770, user), ("/var/lib/ceph", 0o750, user),
                              ("/var/lib/ceph/mon", 0o750, user), ("/var/lib/ceph/mgr", 0o750, user),
                              ("/var/lib/ceph/osd", 0o750, user), ("/etc/ceph", 0o755, "root")):
        make_dir(path, mode, owner)
    files = list(req.get("files", []))
    if req.get("provider"):
        files.append({"path": "/etc/ganeti/ceph.yaml", "content": provider_config(req["provider"], req["node"]),
                      "mode": 0o640, "owner": "root"})
    for mgr in req.get("mgrs", []):
        make_dir(data_dir("mgr", mgr["id"]), 0o750, user)
        files.append({"path": os.path.join(data_dir("mgr", mgr["id"]), "keyring"), "content": mgr["keyring"],
                      "mode": 0o600, "owner": user})
    for f in files:
        if put_file(f["path"], f["content"], f["mode"], f["owner"]):
            changed.append(f["path"])
    for mon in req.get("mons", []):
        if mkfs_mon(mon, user):
            changed.append(f"mon.{mon['id']} store")
    pending, records = [], {}
    for osd in req.get("osds", []):
        done = mkfs_osd(osd, user, records)
        if done == "pending":
            pending.append(osd["id"])
        elif done:
            changed.append(done)
    return {"changed": changed, "pending": pending, "osds": records}


# -- daemons -------------------------------------------------------------------

def _daemons(req: dict[str, Any]) -> list[Daemon]:
    return [Daemon(t, i) for t, i in req.get("daemons", [])]


def _unit(d: Daemon) -> str:
    return f"ceph-{d.type}@{d.id}"


def running(req: dict[str, Any]) -> dict[str, bool]:
    if systemd():
        # is-active prints the state and exits 3 (or 4: no such unit) when not active; bounded like every call.
        return {d.name: runner.run(["systemctl", "is-active", _unit(d)], f"ask systemd about {d.name}", 30,
                                   env=TOOL_ENV, ok=(0, 1, 2, 3, 4)).strip() == "active"
                for d in _daemons(req)}
    return {d.name: daemons.running_pid(RUN_DIR, d, CONF, "ceph-") is not None for d in _daemons(req)}


def start(req: dict[str, Any]) -> dict[str, Any]:
    user = req.get("user", USER)
    todo = [d for d in _daemons(req) if not running({"daemons": [[d.type, d.id]]})[d.name]]
    vols = {o["id"]: volume.with_stable_names(o) for o in req.get("osds", []) if volume.is_volume(o)}
    if systemd():  # ceph-osd@N then activates its device at every start, boots included
        if any([volume.write_dropin(o) for o in vols.values()]):
            _ceph(["systemctl", "daemon-reload"], "reload systemd units")
    else:
        for d in todo:
            if d.type == "osd" and d.id in vols:
                volume.activate(vols[d.id])
    if systemd():
        for d in todo:
            _ceph(["systemctl", "enable", "--now", _unit(d)], f"start {d.name}")
    elif todo:
        daemons.start(todo, CONF, LOG_DIR, TOOL_ENV, user)
    return {"changed": [d.name for d in todo]}


def stop(req: dict[str, Any]) -> dict[str, Any]:
    ds = _daemons(req)
    if systemd():
        was = [d.name for d in ds if running({"daemons": [[d.type, d.id]]})[d.name]]
        for d in ds:
            _ceph(["systemctl", "disable", "--now", _unit(d)], f"stop {d.name}")
        return {"changed": was}
    return {"changed": daemons.stop(ds, RUN_DIR, CONF, grace=30.0, prefix="ceph-")}


def purge(req: dict[str, Any]) -> dict[str, Any]:
    from gnt_storage.deploy import teardown  # remove-distributed-storage only

    return teardown.purge_node(req)


ACTIONS = {"probe": probe, "apply": apply, "start": start, "stop": stop, "purge": purge}


def main() -> int:
    req = json.load(sys.stdin)
    action = ACTIONS.get(req.get("action", ""))
    if action is None:
        raise GanetiCephError(f"unknown node action {req.get('action')!r}")
    json.dump(action(req), sys.stdout)
    return 0


def entry() -> None:
    run_main("gnt-storage node", main)


if __name__ == "__main__":
    entry()
