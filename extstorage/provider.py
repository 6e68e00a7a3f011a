"""The `rbd` ExtStorage provider: Ganeti's environment in, the volume service called, Ganeti's output out.

Ganeti runs `<provider dir>/<action>` with no arguments and the volume in
the environment (see doc/extstorage.md). The executable hands the call to
the node's agent when one runs (extstorage/client.py), else runs it here;
both call `execute`, so output and exit codes are the same either way.
What each action does is ganeti_ceph/rbd/service.py's; here is only the
translation: extstorage/request.py parses the environment, a `do_*` function
per action calls the service and writes its result as Ganeti expects it on
stdout (attach's device and URI), and one line of what was done or why it
failed on stderr (Ganeti logs it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from extstorage import request
from extstorage.request import Request
from ganeti_ceph import config, runner, watchdog
from ganeti_ceph.errors import GanetiCephError, ceph_errors
from ganeti_ceph.rbd.service import Sessions, VolumeService
from ganeti_ceph.session import one_shot


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


# Each action: call the service, then (stdout, the stderr note) exactly as Ganeti has always seen them.
def do_create(svc: VolumeService, req: Request) -> tuple[str, str]:
    made = svc.create(req.spec())
    what = (f"adopted from {made.adopted_from}" if made.adopted_from else
            f"cloned from {made.cloned_from}" if made.cloned_from else "created")
    return "", f"{_name(req)} {what if made.made else 'already exists (same volume)'}"


def do_attach(svc: VolumeService, req: Request) -> tuple[str, str]:
    """Line 1: the block device (empty in userspace mode); line 2: the URI."""
    att = svc.attach(req.ref, req.access)
    return f"{att.device}\nkvm:{att.uri}\n", ""


def do_detach(svc: VolumeService, req: Request) -> tuple[str, str]:
    return "", f"{_name(req)} " + ("unmapped" if svc.detach(req.ref) else "was not mapped on this node")


def do_remove(svc: VolumeService, req: Request) -> tuple[str, str]:
    return "", f"{_name(req)} " + ("removed" if svc.remove(req.ref) else "was already gone")


def do_grow(svc: VolumeService, req: Request) -> tuple[str, str]:
    grown = svc.grow(req.ref, req.new_size_mib or 0)
    return "", f"{_name(req)} is {grown.size_mib} MiB" + (f" ({grown.device} resized)" if grown.device else "")


def do_setinfo(svc: VolumeService, req: Request) -> tuple[str, str]:
    svc.set_info(req.ref, req.metadata or "")
    return "", f"{_name(req)} metadata set"


def do_snapshot(svc: VolumeService, req: Request) -> tuple[str, str]:
    made = svc.snapshot(req.ref, req.snapshot_name or "")
    where = f"{req.pool}/{req.snapshot_name}" if req.pool else req.snapshot_name
    return "", f"{where} " + ("made" if made else "already exists")


def do_open(svc: VolumeService, req: Request) -> tuple[str, str]:
    return "", f"{_name(req)} {svc.open(req.ref, bool(req.open_exclusive))}"


def do_close(svc: VolumeService, req: Request) -> tuple[str, str]:
    closed = svc.close(req.ref)
    guard = closed.guard
    return "", f"{_name(req)} " + ("closed" if closed.was_open else "was not open on this node") + (
        f"; {guard.device} is unmapped unless an open follows within {guard.window_s:.0f} s" if guard else "")


def do_verify(svc: VolumeService, req: Request) -> tuple[str, str]:
    return "", f"parameters and cluster {svc.verify(req.spec())} OK"


def _name(req: Request) -> str:
    return f"{req.pool}/{req.volume}" if req.pool else req.volume


HANDLERS: dict[str, Callable[[VolumeService, Request], tuple[str, str]]] = {
    "create": do_create, "attach": do_attach, "detach": do_detach, "remove": do_remove, "grow": do_grow,
    "setinfo": do_setinfo, "snapshot": do_snapshot, "open": do_open, "close": do_close, "verify": do_verify,
}


def execute(action: str, env: Mapping[str, str], sessions: Sessions = one_shot,
            cfg: config.Config | None = None) -> Outcome:
    """Run one provider call; every failure is one stderr line and an exit code. `cfg`: the config
    `env` names, when the caller has read it already."""
    try:
        cfg = cfg or config.load(config.config_path(dict(env)))
        svc = VolumeService(cfg, sessions)
        req = request.parse(action, env, "" if svc.catalogue.declared else svc.catalogue.pool(""))
        # Backstop: a librados/librbd error a handler did not map is still one line and its exit code.
        with ceph_errors(cfg.cluster, f"{action} {_name(req)}"):
            out, note = HANDLERS[action](svc, req)
    except GanetiCephError as exc:
        return Outcome(exc.exit_code, "", f"rbd {action}: {exc.message}\n")
    except Exception as exc:  # a bug: still one line for Ganeti, the traceback for the log
        import traceback  # only for a bug: not loaded for every call

        traceback.print_exc(file=sys.stderr)
        return Outcome(1, "", f"rbd {action}: internal error: {type(exc).__name__}: {exc}\n")
    return Outcome(0, out, f"rbd {action}: {note}\n" if note else "")


def entry() -> None:
    """The in-process path: run the call named by argv[0] and exit with its code."""
    action = os.path.basename(sys.argv[0])
    env = dict(os.environ)
    os.environ.clear()  # children (rbd, losetup...) inherit nothing from noded
    os.environ.update(runner.clean_env())
    try:  # read once: the watchdog's bound and the call's config
        cfg: config.Config | None = config.load(config.config_path(env))
    except GanetiCephError:
        cfg = None  # execute reads it again and says what is wrong, in its one line
    watchdog.start(cfg.timeouts.action if cfg else config.action_timeout(env), f"rbd {action}")
    out = execute(action, env, cfg=cfg)
    sys.stdout.write(out.stdout)
    sys.stderr.write(out.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # The call's session is shut down and its output flushed: the interpreter's and librados'
    # teardown (tens of milliseconds) would only add time to every call.
    os._exit(out.code)
