"""The `rbd` ExtStorage provider: one function per action, one `execute` for all.

Ganeti runs `<provider dir>/<action>` with no arguments and the volume in
the environment (see doc/extstorage.md). The executable hands the call to
the node's agent when one runs (extstorage/client.py), else runs it here;
both call `execute`, so output and exit codes are the same either way.
Results go to stdout (attach's device and URI), one line of what was done
or why it failed to stderr (Ganeti logs it).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass

from extstorage import request
from extstorage.request import Request
from ganeti_ceph import config, runner, watchdog
from ganeti_ceph.config import Config, conf_fsid
from ganeti_ceph.errors import GanetiCephError, NotFound, UsageError, ceph_errors
from ganeti_ceph.rbd import locks, mappers, prealloc_wipe, snapshots, target_guard, volumes
from ganeti_ceph.rbd import remove as removal
from ganeti_ceph.rbd.access import check_qemu_conf, userspace_uri
from ganeti_ceph.rbd.mappers import Target
from ganeti_ceph.session import Session, one_shot

Sessions = Callable[[Config], AbstractContextManager[Session]]


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Call:
    """What a handler needs: the config, the request, and where sessions come from."""

    cfg: Config
    req: Request
    sessions: Sessions

    def session(self) -> AbstractContextManager[Session]:
        return self.sessions(self.cfg)

    def target(self, fsid: str) -> Target:
        return Target(fsid, self.req.pool, self.req.volume)

    @property
    def name(self) -> str:
        return f"{self.req.pool}/{self.req.volume}"


def fsid_of(c: Call, session: Session | None = None) -> str:
    fsid = conf_fsid(c.cfg.conf)
    if fsid:
        return fsid
    if session is not None:
        return session.fsid()
    with c.session() as s:
        return s.fsid()


def _meta(req: Request) -> dict[str, str]:
    meta = {volumes.META_ACCESS: req.access}
    if req.uuid:
        meta[volumes.META_UUID] = req.uuid
    if req.cname:
        meta[volumes.META_CNAME] = req.cname
    return meta


def do_create(c: Call) -> tuple[str, str]:
    req = c.req
    features = volumes.parse_features(req.params.get("features"))
    if req.access == "kernelspace" and c.cfg.mapper == "krbd" and "journaling" in features:
        raise UsageError("feature journaling is not supported by krbd; drop it or use access=userspace")
    origin = volumes.parse_origin(req.origin, req.pool) if req.origin else None
    data_pool = req.params.get("data_pool")
    if req.params.get("adopt_image") or origin:  # Ganeti's wipe would zero them: see ganeti_ceph/rbd/prealloc_wipe.py
        prealloc_wipe.refuse_if_wiped(f"the adopted image {req.pool}/{req.params['adopt_image']}"
                                      if req.params.get("adopt_image") else f"this clone of {origin}")
    with c.session() as s:
        if req.params.get("adopt_image"):
            made = volumes.adopt(s, req.pool, req.params["adopt_image"], req.volume, req.size_mib or 0, _meta(req))
            what = f"adopted from {req.pool}/{req.params['adopt_image']}"
        elif origin:
            made = volumes.clone(s, origin, req.pool, req.volume, req.size_mib or 0, features, data_pool,
                                 _meta(req), c.cfg.clone_max_depth)
            what = f"cloned from {origin}"
        else:
            made = volumes.create(s, req.pool, req.volume, req.size_mib or 0, features, data_pool, _meta(req))
            what = "created"
    return "", f"{c.name} {what if made else 'already exists (same volume)'}"


def do_attach(c: Call) -> tuple[str, str]:
    """Line 1: the block device (empty in userspace mode); line 2: the URI."""
    uri = f"kvm:{userspace_uri(c.req.pool, c.req.volume, c.cfg.client_id)}\n"
    if c.req.access == "userspace":
        with c.session() as s:
            _require_volume(s, c)
            check_qemu_conf(fsid_of(c, s), c.cfg.source)
        return "\n" + uri, ""
    mapper = mappers.for_config(c.cfg)
    fsid = conf_fsid(c.cfg.conf)
    # Only sysfs and a link are read here: nothing that could block on a
    # wedged mapping (a stat of an rbd-fuse file can hang with its cluster).
    dev = mapper.find(c.target(fsid)) if fsid else None
    if dev is None:
        with c.session() as s:
            _require_volume(s, c)
            dev = mapper.map(c.target(fsid_of(c, s)))
    return f"{dev}\n{uri}", ""


def _require_volume(s: Session, c: Call) -> None:
    """The image exists, or is a pending snapshot volume, made real now."""
    try:
        s.require_image(c.req.pool, c.req.volume)
    except NotFound:
        if not snapshots.materialize(s, c.req.pool, c.req.volume):
            raise


def do_detach(c: Call) -> tuple[str, str]:
    """Unmap what attach mapped, in either access mode; fine if nothing is."""
    removed = mappers.for_config(c.cfg).unmap(c.target(fsid_of(c)))
    return "", f"{c.name} " + ("unmapped" if removed else "was not mapped on this node")


def do_remove(c: Call) -> tuple[str, str]:
    """Ganeti detaches first; a mapping still present (here or elsewhere) is a
    watcher, and remove refuses rather than pull a disk from under a VM."""
    with c.session() as s:
        gone = removal.remove(s, c.req.pool, c.req.volume, c.req.uuid)
    return "", f"{c.name} " + ("removed" if gone else "was already gone")


def do_grow(c: Call) -> tuple[str, str]:
    with c.session() as s:
        size = volumes.grow(s, c.req.pool, c.req.volume, c.req.new_size_mib or 0)
        fsid = fsid_of(c, s)
    mapper = mappers.for_config(c.cfg)
    dev = mapper.find(c.target(fsid))
    if dev:  # mapped here: the device must show the new size before Ganeti looks
        mapper.refresh(dev, c.target(fsid), size * volumes.MIB)
    return "", f"{c.name} is {size} MiB" + (f" ({dev} resized)" if dev else "")


def do_setinfo(c: Call) -> tuple[str, str]:
    with c.session() as s:
        volumes.set_metadata(s, c.req.pool, c.req.volume, {volumes.META_INFO: c.req.metadata or ""})
    return "", f"{c.name} metadata set"


def do_snapshot(c: Call) -> tuple[str, str]:
    with c.session() as s:
        made = snapshots.snapshot(s, c.req.pool, c.req.volume, c.req.snapshot_name or "")
    return "", f"{c.req.pool}/{c.req.snapshot_name} " + ("made" if made else "already exists")


def do_open(c: Call) -> tuple[str, str]:
    with c.session() as s:
        _require_volume(s, c)
        done = locks.open_volume(s, c.req.pool, c.req.volume, c.cfg.node_name, bool(c.req.open_exclusive))
        fsid = fsid_of(c, s)
    target_guard.disarm(c.cfg, c.target(fsid))
    return "", f"{c.name} {done}"


def do_close(c: Call) -> tuple[str, str]:
    """Close; an unused mapping left here gets a guard (ganeti_ceph/rbd/target_guard.py): after a
    failed live migration to this node, Ganeti would never unmap it. The guard is armed before
    Ceph is asked: a close that fails because this node lost Ceph is such a migration."""
    fsid = conf_fsid(c.cfg.conf)
    guarded = _guard(c, fsid) if fsid else ""
    with c.session() as s:
        if not fsid:
            guarded = _guard(c, s.fsid())
        had = locks.close_volume(s, c.req.pool, c.req.volume, c.cfg.node_name)
    return "", f"{c.name} " + ("closed" if had else "was not open on this node") + guarded


def _guard(c: Call, fsid: str) -> str:
    dev = mappers.for_config(c.cfg).find(c.target(fsid))
    if dev is None or not target_guard.arm(c.cfg, c.target(fsid), dev):
        return ""
    return f"; {dev} is unmapped unless an open follows within {target_guard.window(c.cfg):.0f} s"


def do_verify(c: Call) -> tuple[str, str]:
    """Parameters and config are valid, the cluster answers, pool (and origin) exist."""
    params = c.req.params
    volumes.parse_features(params.get("features"))
    with c.session() as s:
        for pool in filter(None, (c.req.pool, params.get("data_pool"))):
            with s.ioctx(pool):
                pass
        if c.req.origin:
            ref = volumes.parse_origin(c.req.origin, c.req.pool)
            s.require_image(ref.pool, ref.image)
    return "", f"parameters and cluster {c.cfg.cluster} OK"


HANDLERS: dict[str, Callable[[Call], tuple[str, str]]] = {
    "create": do_create, "attach": do_attach, "detach": do_detach, "remove": do_remove, "grow": do_grow,
    "setinfo": do_setinfo, "snapshot": do_snapshot, "open": do_open, "close": do_close, "verify": do_verify,
}


def execute(action: str, env: Mapping[str, str], sessions: Sessions = one_shot) -> Outcome:
    """Run one provider call; every failure is one stderr line and an exit code."""
    try:
        cfg = config.load(config.config_path(dict(env)))
        req = request.parse(action, env, cfg.pool)
        # Backstop: a librados/librbd error a handler did not map is still one line and its exit code.
        with ceph_errors(cfg.cluster, f"{action} {req.pool}/{req.volume}"):
            out, note = HANDLERS[action](Call(cfg, req, sessions))
    except GanetiCephError as exc:
        return Outcome(exc.exit_code, "", f"rbd {action}: {exc.message}\n")
    except Exception as exc:  # a bug: still one line for Ganeti, the traceback for the log
        traceback.print_exc(file=sys.stderr)
        return Outcome(1, "", f"rbd {action}: internal error: {type(exc).__name__}: {exc}\n")
    return Outcome(0, out, f"rbd {action}: {note}\n" if note else "")


def action_timeout(env: Mapping[str, str]) -> float:
    """timeouts.action of the config the call names (see config.action_timeout)."""
    return config.action_timeout(dict(env))


def entry() -> None:
    """The in-process path: run the call named by argv[0] and exit with its code."""
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    os.environ.clear()  # children (rbd, losetup...) inherit nothing from noded
    os.environ.update(runner.clean_env())
    watchdog.start(action_timeout(env), f"rbd {action}")
    out = execute(action, env)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(out.code)
