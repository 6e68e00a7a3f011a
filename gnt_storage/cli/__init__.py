"""`gnt-storage`: our subcommands, and Ganeti's own ones handed over unchanged.

Ganeti ships `gnt-storage` (3.0: diagnose, info); we add `local-cluster`,
`init-distributed-storage`, `remove-distributed-storage`, `options`,
`rbd-access` and `rbd-convert`. Anything we do not own is exec'd as Ganeti's
command with the same arguments, so admins keep one command name; `--help`
lists Ganeti's subcommands beside ours, read from Ganeti's own `--help` so
they match the Ganeti installed. Where each sits: the package diverts Ganeti's
to /usr/sbin/gnt-storage.ganeti and puts ours at /usr/sbin/gnt-storage; a pip
or checkout install leaves Ganeti's in place and ours in the venv's bin
(doc/man/gnt-storage-ceph.8.md).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pkgutil
import sys
from typing import NoReturn

from ganeti_ceph import __version__, runner
from ganeti_ceph.errors import ArgumentParser, GanetiCephError, ToolFailed, UsageError, run_main
from gnt_storage.deploy import local, options

PROG = "gnt-storage"
# Command groups over the volume service (issue 14): every module of this package is one, with NAME,
# HELP, add_arguments(parser) and run(args) -> exit code; a new group is one module, found by its file
# (`_` modules are shared helpers: _listing.py prints gnt-* style lists).
GROUPS = tuple(sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(__path__) if m.name[0] != "_"))
OURS = ("local-cluster", "rbd-access", "rbd-convert", "init-distributed-storage", "remove-distributed-storage",
        "options", *GROUPS)
# Ganeti's own: moved aside by our package's dpkg-divert, else where Debian's Ganeti puts it.
GANETI_CANDIDATES = ("/usr/sbin/gnt-storage.ganeti", "/usr/sbin/gnt-storage", "/usr/bin/gnt-storage")
ENV_GANETI = "GANETI_CEPH_GANETI_GNT_STORAGE"


def ganeti_command() -> str | None:
    """Ganeti's own gnt-storage, never ourselves."""
    me = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    candidates = [os.environ[ENV_GANETI]] if os.environ.get(ENV_GANETI) else list(GANETI_CANDIDATES)
    for path in candidates:
        if os.access(path, os.X_OK) and os.path.realpath(path) != me:
            return path
    return None


# Ganeti names itself after sys.argv[0] (its usage lines, commands log, GNT_STORAGE_<CMD> option variables),
# so its diverted script runs as `gnt-storage`: the way `python3 SCRIPT` runs it, with the script's
# resolved directory first on sys.path, but with argv[0] set (runpy would set it back to the file's name).
_AS_GNT_STORAGE = ("import os, sys; script = sys.argv[1]; "
                   "sys.path[0] = os.path.dirname(os.path.realpath(script)); "
                   f"sys.argv[:2] = [{PROG!r}]; code = compile(open(script, 'rb').read(), script, 'exec'); "
                   "exec(code, {'__name__': '__main__', '__file__': script, '__builtins__': __builtins__})")


def exec_ganeti(ganeti: str, args: list[str]) -> NoReturn:
    """Become Ganeti's gnt-storage, named `gnt-storage` rather than its diverted file's name."""
    first = b""
    with contextlib.suppress(OSError), open(ganeti, "rb") as fh:
        first = fh.readline(256)
    interpreter = first[2:].decode(errors="replace").split() if first.startswith(b"#!") else []
    if interpreter and os.path.basename(interpreter[0]).startswith("python"):
        os.execv(interpreter[0], [*interpreter, "-c", _AS_GNT_STORAGE, ganeti, *args])
    os.execv(ganeti, [PROG, *args])  # not a Python script: as it is


def ganeti_help() -> str:
    """The --help lines of Ganeti's own subcommands, asked of the installed Ganeti (bounded)."""
    ganeti = ganeti_command()
    if ganeti is None:
        return "Ganeti's own subcommands: none here (Ganeti's gnt-storage is not installed)."
    try:
        out = runner.execute([ganeti, "--help"], f"{ganeti} --help", 10).stdout
    except ToolFailed as exc:
        return f"Ganeti's own subcommands: unknown ({exc})."
    lines = out.split("Commands:", 1)[1].splitlines() if "Commands:" in out else []
    commands = [line.rstrip() for line in lines if line.startswith(" ") and " - " in line]
    return "\n".join([f"Ganeti's own subcommands, handed to {ganeti} (see gnt-storage COMMAND --help):",
                      *(commands or [f" (none listed; see {ganeti} --help)"])])


def build_parser(epilog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Ceph storage for Ganeti (ganeti-ceph).", epilog=epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} (ganeti-ceph) {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    lc = sub.add_parser("local-cluster", help="a single-host Ceph cluster for trying and testing ganeti-ceph")
    lc_sub = lc.add_subparsers(dest="action", required=True)
    for action, text in (("up", "build and start a cluster, or restart its stopped daemons"),
                         ("status", "show daemons and health"),
                         ("down", "stop the daemons and remove the data")):
        p = lc_sub.add_parser(action, help=text)
        p.add_argument("--dir", default=local.DEFAULT_DIR, help=f"cluster directory (default {local.DEFAULT_DIR})")
        if action == "up":
            p.add_argument("--port", type=int, default=local.DEFAULT_PORT,
                           help=f"first of {local.PORT_SPAN} ports on 127.0.0.1 (default {local.DEFAULT_PORT})")
            p.add_argument("--osds", type=int, default=3, choices=range(1, 9), metavar="N", help="OSD count (1-8)")
            p.add_argument("--mons", type=int, default=1, choices=(1, 3), metavar="N",
                           help="monitor count, 1 or 3 (3: same address, ports of their own; default 1)")
            p.add_argument("--pool", default="rbd", help="pool for Ganeti disks (default rbd)")
            p.add_argument("--client", default="ganeti", help="Ceph client id for Ganeti (default ganeti)")
            p.add_argument("--addr", default=local.HOST,
                           help="IPv4 address of this host to bind (default 127.0.0.1; others for test networks)")
            p.add_argument("--wait", type=float, default=120.0, help="seconds to wait for HEALTH_OK")
            p.add_argument("--wipe", action="store_true", help="over an existing cluster in DIR: destroy it and "
                           "every volume in it, then build anew (without it, stopped daemons are restarted)")
            _backend_options(p)
    ids = sub.add_parser("init-distributed-storage", help="bootstrap Ceph onto a Ganeti node group over SSH "
                         "(on the master; re-runnable)")
    ids.add_argument("-s", dest="storage_type", required=True, help="storage type: ceph")
    ids.add_argument("-S", dest="specs", action="append", default=[], metavar="ceph:key=value[,...]",
                     help=f"storage options ({', '.join(options.KEYS)}); see gnt-storage-ceph(8)")
    ids.add_argument("--wait", type=float, default=300.0, help="seconds to wait for HEALTH_OK (default 300)")
    _backend_options(ids)
    ids.add_argument("group", help="the node group to turn into the storage cluster")
    rds = sub.add_parser("remove-distributed-storage", help="stop and remove the node group's Ceph cluster, "
                         "its daemons and data (on the master; refused while any image lives there)")
    rds.add_argument("group", help="the node group that is the storage cluster")
    sub.add_parser("options", help="show the cluster-wide storage options (set with gnt-storage -S ceph:key=value)")
    ra = sub.add_parser("rbd-access", help="switch an instance's rbd disks to kernelspace or userspace access "
                        "(on the Ganeti master, instance stopped)")
    ra.add_argument("instance", help="the instance (stopped: gnt-instance shutdown INSTANCE)")
    ra.add_argument("mode", help="kernelspace or userspace")
    ra.add_argument("--dry-run", action="store_true", help="print the gnt-instance commands instead of running them")
    rc = sub.add_parser("rbd-convert", help="take over an instance's disks made by GRNET's rbd provider or "
                        "Ganeti's -t rbd template, without copying (on the Ganeti master, instance stopped)")
    rc.add_argument("instance", help="the instance (stopped: gnt-instance shutdown INSTANCE)")
    rc.add_argument("--dry-run", action="store_true", help="print the gnt-instance commands instead of running them")
    for group in _groups():
        group.add_arguments(sub.add_parser(group.NAME, help=group.HELP))
    return parser


def _backend_options(p: ArgumentParser) -> None:
    p.add_argument("--backend", metavar="NAME", help="register the cluster's pool as backend NAME in the "
                   "backend catalogue of /etc/ganeti/ceph.yaml (or $GANETI_CEPH_CONFIG; doc/backends.md)")
    p.add_argument("--tags", metavar="A+B", help="with --backend: the backend's tags")


def _groups() -> list:
    """The command group modules (imported only when a parser is built)."""
    import importlib

    return [importlib.import_module(f"{__name__}.{name.replace('-', '_')}") for name in GROUPS]


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] == "-S":
        from gnt_storage.deploy import cluster_options

        return cluster_options.set_options(_specs(args_in))
    if args_in and args_in[0] not in OURS and not args_in[0].startswith("-"):
        ganeti = ganeti_command()
        if ganeti is None:
            raise GanetiCephError(
                f"'{args_in[0]}' is a Ganeti gnt-storage command, but Ganeti is not installed here; "
                f"ours are: {', '.join(OURS)}"
            )
        exec_ganeti(ganeti, args_in)
    args = build_parser(ganeti_help() if args_in[:1] in (["-h"], ["--help"]) else None).parse_args(args_in)
    if not 0 < getattr(args, "wait", 1) < math.inf:
        raise UsageError(f"--wait {args.wait}: give a positive number of seconds")
    if args.command == "local-cluster":
        return _local_cluster(args)
    if args.command == "init-distributed-storage":
        if args.storage_type != "ceph":
            raise UsageError(f"-s {args.storage_type}: the only storage type here is ceph")
        from gnt_storage.deploy import distributed, state_lock

        tags = _backend_tags(args)
        if args.backend:
            distributed.check_registrable(args.group)
        with state_lock.held("init-distributed-storage"):
            code = distributed.init(args.group, args.specs, wait=args.wait)
            if args.backend and code == 0:
                # The group's nodes reach their cluster through ceph.yaml: the backend names no conf of its own.
                _register({"name": args.backend, "pool": distributed.pool(), "tags": tags})
            elif args.backend:
                print(f"not registered as backend {args.backend} yet: the cluster is not healthy; "
                      "rerun with --backend once it is")
        return code
    if args.command == "remove-distributed-storage":
        from gnt_storage import deploy

        return deploy.remove_storage(args.group)
    if args.command == "options":
        from gnt_storage.deploy import cluster_options

        return cluster_options.show()
    if args.command == "rbd-access":
        from ganeti_ceph.rbd.service import VolumeService

        return VolumeService.switch_access(args.instance, args.mode, dry_run=args.dry_run)
    if args.command == "rbd-convert":
        from ganeti_ceph.rbd import convert

        return convert.convert(args.instance, dry_run=args.dry_run)
    for group in _groups():
        if args.command == group.NAME:
            return group.run(args)
    return 2


def _specs(argv: list[str]) -> list[str]:
    """`-S spec [-S spec...]` and nothing else."""
    if len(argv) % 2 or any(flag != "-S" for flag in argv[::2]):
        raise UsageError("usage: gnt-storage -S ceph:key=value[,key=value] [-S ...]")
    return argv[1::2]


def _local_cluster(args: argparse.Namespace) -> int:
    from ganeti_ceph.naming import check_client_id, check_pool_name

    if args.action == "status":
        return local.status(args.dir)
    if args.action == "down":
        return local.down(args.dir)
    check_pool_name(args.pool)
    check_client_id(args.client)
    opts = local.Options(dir=args.dir, port=args.port, osds=args.osds, mons=args.mons, pool=args.pool,
                         client=args.client, wait=args.wait, addr=args.addr, wipe=args.wipe)
    tags = _backend_tags(args)
    cfg = local.up(opts)
    if args.backend:
        _register({"name": args.backend, "pool": cfg.pool, "conf": cfg.conf, "keyring": cfg.keyring,
                   "client": cfg.client_id, "cluster": cfg.cluster, "tags": tags})
    print(f"conf: {cfg.conf}")
    print(f"client: client.{cfg.client_id} (keyring {cfg.keyring})")
    print(f"pool: {cfg.pool}")
    print(f"ganeti-ceph config: {os.path.join(os.path.dirname(cfg.conf), 'ganeti-ceph.yaml')}")
    return 0


def _backend_tags(args: argparse.Namespace) -> tuple[str, ...]:
    """--backend NAME and --tags checked before anything is built: bad input changes nothing."""
    from ganeti_ceph.rbd.catalogue import check_backend_name, parse_tags

    if args.backend:
        check_backend_name(args.backend)
        return parse_tags(args.tags or "")
    if args.tags:
        raise UsageError("--tags goes with --backend NAME")
    return ()


def _register(values: dict[str, object]) -> None:
    """Add the cluster just built to the backend catalogue (gnt-storage backend add), as this node's
    ceph.yaml reaches it."""
    from ganeti_ceph import config
    from ganeti_ceph.rbd import backend_admin
    from ganeti_ceph.rbd.service import VolumeService

    for line in backend_admin.add(VolumeService(config.load()), values):
        print(line)


def entry() -> None:
    run_main(PROG, main)
