"""The `rbd` ExtStorage provider: one entry point for every action.

Ganeti runs `<provider dir>/<action>` with no arguments and the volume in
the environment (see doc/extstorage.md). Each executable there is a link to
one script that calls `entry()`; the action is the name it was run as.
Diagnostics go to stderr (Ganeti logs them), results to stdout.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping

from extstorage import locks, mappers, request, volumes
from extstorage import remove as removal
from extstorage.access import userspace_uri
from extstorage.mappers import Target
from extstorage.request import Request
from ganeti_ceph import config
from ganeti_ceph.config import Config
from ganeti_ceph.errors import UsageError, run_main
from ganeti_ceph.session import Session

Handler = Callable[[Config, Request], str]


def conf_fsid(conf_path: str) -> str | None:
    """The fsid from ceph.conf's [global], if written there (saves a connect)."""
    try:
        with open(conf_path) as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep and key.strip().replace(" ", "_") == "fsid":
                    return value.strip()
    except OSError:
        return None
    return None


def fsid_of(cfg: Config, session: Session | None = None) -> str:
    fsid = conf_fsid(cfg.conf)
    if fsid:
        return fsid
    if session is not None:
        return session.fsid()
    with Session(cfg) as s:
        return s.fsid()


def _meta(req: Request) -> dict[str, str]:
    meta = {}
    if req.uuid:
        meta[volumes.META_UUID] = req.uuid
    if req.cname:
        meta[volumes.META_CNAME] = req.cname
    return meta


def do_create(cfg: Config, req: Request) -> str:
    features = volumes.parse_features(req.params.get("features"))
    if req.access == "kernelspace" and cfg.mapper == "krbd" and "journaling" in features:
        raise UsageError("feature journaling is not supported by krbd; drop it or use access=userspace")
    origin = volumes.parse_origin(req.origin, req.pool) if req.origin else None
    data_pool = req.params.get("data_pool")
    with Session(cfg) as s:
        if origin:
            made = volumes.clone(s, origin, req.pool, req.volume, req.size_mib or 0, features, data_pool,
                                 _meta(req), cfg.clone_max_depth)
            what = f"cloned from {origin}"
        else:
            made = volumes.create(s, req.pool, req.volume, req.size_mib or 0, features, data_pool, _meta(req))
            what = "created"
    return f"{req.pool}/{req.volume} {what if made else 'already exists (same volume)'}"


def do_attach(cfg: Config, req: Request) -> str:
    """Print the device (line 1) and the userspace URI (line 2) for Ganeti."""
    if req.access == "userspace":
        with Session(cfg) as s:
            s.require_image(req.pool, req.volume)
        print()
        print(f"kvm:{userspace_uri(req.pool, req.volume, cfg.client_id)}")
        return ""
    mapper = mappers.for_config(cfg)
    fsid = conf_fsid(cfg.conf)
    dev = mapper.find(Target(fsid, req.pool, req.volume)) if fsid else None
    if dev is not None and fsid:
        mapper.refresh(dev, Target(fsid, req.pool, req.volume))
    if dev is None:
        with Session(cfg) as s:
            s.require_image(req.pool, req.volume)
            dev = mapper.map(Target(fsid_of(cfg, s), req.pool, req.volume))
    print(dev)
    print(f"kvm:{userspace_uri(req.pool, req.volume, cfg.client_id)}")
    return ""


def do_detach(cfg: Config, req: Request) -> str:
    """Unmap what attach mapped, in either access mode; fine if nothing is."""
    target = Target(fsid_of(cfg), req.pool, req.volume)
    removed = mappers.for_config(cfg).unmap(target)
    return f"{req.pool}/{req.volume} " + ("unmapped" if removed else "was not mapped on this node")


def do_remove(cfg: Config, req: Request) -> str:
    """Ganeti detaches first; a mapping still present (here or elsewhere) is a
    watcher, and remove refuses rather than pull a disk from under a VM."""
    with Session(cfg) as s:
        gone = removal.remove(s, req.pool, req.volume)
    return f"{req.pool}/{req.volume} " + ("removed" if gone else "was already gone")


def do_grow(cfg: Config, req: Request) -> str:
    with Session(cfg) as s:
        size = volumes.grow(s, req.pool, req.volume, req.new_size_mib or 0)
        fsid = fsid_of(cfg, s)
    mapper = mappers.for_config(cfg)
    target = Target(fsid, req.pool, req.volume)
    dev = mapper.find(target)
    if dev:  # mapped here: the device must show the new size before Ganeti looks
        mapper.refresh(dev, target, size * volumes.MIB)
    return f"{req.pool}/{req.volume} is {size} MiB" + (f" ({dev} resized)" if dev else "")


def do_setinfo(cfg: Config, req: Request) -> str:
    with Session(cfg) as s:
        volumes.set_metadata(s, req.pool, req.volume, {volumes.META_INFO: req.metadata or ""})
    return f"{req.pool}/{req.volume} metadata set"


def do_snapshot(cfg: Config, req: Request) -> str:
    with Session(cfg) as s:
        made = removal.snapshot(s, req.pool, req.volume, req.snapshot_name or "")
    return f"{req.pool}/{req.snapshot_name} " + ("made" if made else "already exists")


def do_open(cfg: Config, req: Request) -> str:
    with Session(cfg) as s:
        return f"{req.pool}/{req.volume} " + locks.open_volume(s, req.pool, req.volume, cfg.node_name,
                                                                bool(req.open_exclusive))


def do_close(cfg: Config, req: Request) -> str:
    with Session(cfg) as s:
        had = locks.close_volume(s, req.pool, req.volume, cfg.node_name)
    return f"{req.pool}/{req.volume} " + ("closed" if had else "was not open on this node")


def do_verify(cfg: Config, req: Request) -> str:
    """Parameters and config are valid, the cluster answers, pool (and origin) exist."""
    volumes.parse_features(req.params.get("features"))
    with Session(cfg) as s:
        with s.ioctx(req.pool):
            pass
        if req.params.get("data_pool"):
            with s.ioctx(req.params["data_pool"]):
                pass
        if req.origin:
            ref = volumes.parse_origin(req.origin, req.pool)
            s.require_image(ref.pool, ref.image)
    if req.access == "kernelspace":
        mappers.for_config(cfg)  # a known mapper (config already validated it)
    return f"parameters and cluster {cfg.cluster} OK"


HANDLERS: dict[str, Handler] = {
    "create": do_create, "attach": do_attach, "detach": do_detach, "remove": do_remove, "grow": do_grow,
    "setinfo": do_setinfo, "snapshot": do_snapshot, "open": do_open, "close": do_close, "verify": do_verify,
}


def run(action: str, env: Mapping[str, str], watchdog: bool = False) -> int:
    """Load config, check the request, do the action; every error is one line."""
    cfg = config.load(config.config_path(dict(env)))
    if watchdog:
        _watchdog(cfg.timeouts.action, action)
    req = request.parse(action, env, cfg.pool)
    note = HANDLERS[action](cfg, req)
    if note:
        print(f"rbd {action}: {note}", file=sys.stderr)
    return 0


def _watchdog(seconds: float, action: str) -> None:
    """Backstop: end the process if an action outlives its bound (Ganeti never would)."""
    def fire() -> None:
        time.sleep(seconds)
        print(f"rbd {action}: did not finish within {seconds:.0f} s (timeouts.action); giving up", file=sys.stderr,
              flush=True)
        os._exit(4)

    threading.Thread(target=fire, daemon=True).start()


def entry() -> None:
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    os.environ.clear()  # children (rbd, losetup...) inherit nothing from noded
    os.environ.update({"PATH": mappers.PATH, "LC_ALL": "C"})
    run_main(f"rbd {action}", lambda: run(action, env, watchdog=True))
