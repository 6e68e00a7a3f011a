"""`gnt-storage backend`: the backend catalogue (ganeti_ceph/rbd/backend_admin.py), in gnt-* style.

list/show/top read the backends live (capacity, free, used, provisioned,
volumes, I/O); add/modify/remove and project/remove-project change the
catalogue file and copy it to every node. Translation only.
"""

from __future__ import annotations

import argparse
import sys
import time

from ganeti_ceph import config
from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import backend_admin, catalogue
from ganeti_ceph.rbd.backend_admin import Live
from ganeti_ceph.rbd.placement import GIB, Figures
from ganeti_ceph.rbd.service import VolumeService
from gnt_storage.cli._listing import Field, add_options, add_units, check_options, show, table

NAME = "backend"
HELP = "the storage backends: list, show, top (live figures), add, modify, remove; project quotas"
MIB = 1 << 20
FIELDS = {
    "name": Field("Name"), "cluster": Field("Cluster"), "pool": Field("Pool"), "data_pool": Field("DataPool"),
    "tags": Field("Tags"), "cost": Field("Cost", numeric=True), "overcommit": Field("Overcommit", numeric=True),
    "capacity": Field("Capacity", numeric=True, mib=True), "free": Field("Free", numeric=True, mib=True),
    "used": Field("Used", numeric=True, mib=True), "provisioned": Field("Provisioned", numeric=True, mib=True),
    "volumes": Field("Volumes", numeric=True), "quota": Field("Quota"),
    "read": Field("Read/s", numeric=True, mib=True), "write": Field("Write/s", numeric=True, mib=True),
    "iops": Field("IOPS", numeric=True), "status": Field("Status"),
}
DEFAULT_FIELDS = ("name", "pool", "tags", "cost", "capacity", "free", "provisioned", "volumes", "quota", "status")
TOP_FIELDS = ("name", "pool", "read", "write", "iops", "free", "provisioned", "volumes", "status")
SORTS = {"io": lambda r: -(r["read"] or 0) - (r["write"] or 0), "use": lambda r: -(r["provisioned"] or 0)}
# options of add/modify: (flag, key in the catalogue, help)
SETTINGS = (("--pool", "pool", "the pool its volumes live in"),
            ("--namespace", "namespace", "an RBD namespace in the pool (made if missing)"),
            ("--data-pool", "data_pool", "a pool for the volumes' data objects"),
            ("--conf", "conf", "another cluster's ceph.conf (on every node; default: ceph.yaml's)"),
            ("--keyring", "keyring", "that cluster's client keyring (a path; on every node)"),
            ("--client", "client", "the Ceph client id there (default: ceph.yaml's)"),
            ("--cluster", "cluster", "a name for that cluster in messages"),
            ("--tags", "tags", "what it offers, a+b (placement by disk parameter tags=)"),
            ("--cost", "cost", "cost per GiB (placement takes the cheapest with room)"),
            ("--overcommit", "overcommit", "provisioned may reach capacity times this (0: no check; default 1)"),
            ("--quota-gib", "quota_gib", "provisioned GiB at most (0: none)"),
            ("--quota-volumes", "quota_volumes", "volumes at most (0: none)"))
NUMBERS = {"cost": float, "overcommit": float, "quota_gib": float, "quota_volumes": int}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="one line per backend, with live figures from Ceph")
    ls.add_argument("names", nargs="*", metavar="NAME", help="only these backends")
    add_options(ls, FIELDS, DEFAULT_FIELDS)
    sh = sub.add_parser("show", help="every field of one backend")
    sh.add_argument("name", metavar="NAME")
    add_units(sh)
    top = sub.add_parser("top", help="the backends refreshed like top, busiest first")
    top.add_argument("--sort", choices=tuple(SORTS), default="io", help="by I/O (default) or by provisioned use")
    top.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes (default 2)")
    top.add_argument("--count", type=int, default=0, metavar="N", help="stop after N refreshes (default: until ^C)")
    add_units(top)
    for action, text in (("add", "add a backend to the catalogue (its pool must exist; a namespace is made)"),
                         ("modify", "change a backend (where its volumes are cannot change while it holds any)")):
        p = sub.add_parser(action, help=text)
        p.add_argument("name", metavar="NAME")
        for flag, _key, help_text in SETTINGS:
            p.add_argument(flag, help=help_text, required=action == "add" and flag == "--pool")
    rm = sub.add_parser("remove", help="remove a backend (refused while it holds volumes)")
    rm.add_argument("name", metavar="NAME")
    pr = sub.add_parser("project", help="set a project's quotas (its instances are tagged project:NAME)")
    pr.add_argument("name", metavar="NAME")
    pr.add_argument("--quota-gib", help="GiB of disks at most (0: none)")
    pr.add_argument("--quota-volumes", help="disks at most (0: none)")
    rp = sub.add_parser("remove-project", help="drop a project's quotas")
    rp.add_argument("name", metavar="NAME")
    sub.add_parser("list-projects", help="the projects and their quotas")


def _number(flag: str, key: str, text: str) -> float | int:
    try:
        value = NUMBERS[key](text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: give a {'whole ' if NUMBERS[key] is int else ''}number >= 0") from None
    return value


def _values(args: argparse.Namespace) -> dict[str, object]:
    out: dict[str, object] = {"name": args.name}
    for flag, key, _help in SETTINGS:
        text = getattr(args, flag[2:].replace("-", "_"))
        if text is None:
            continue
        out[key] = _number(flag, key, text) if key in NUMBERS else (catalogue.parse_tags(text) if key == "tags"
                                                                    else text)
    return out


def row(live: Live) -> dict[str, object]:
    """One backend's fields: sizes and rates in MiB, the rest as text (pure)."""
    b, f = live.backend, live.figures
    quota = ", ".join(filter(None, (f"{b.quota_gib:g} GiB" if b.quota_gib else "",
                                    f"{b.quota_volumes} volumes" if b.quota_volumes else ""))) or "-"
    out: dict[str, object] = {"name": b.name, "cluster": b.cluster or "-", "pool": b.location,
                              "data_pool": b.data_pool or "-", "tags": "+".join(b.tags) or "-", "cost": f"{b.cost:g}",
                              "overcommit": f"{b.overcommit:g}" if b.overcommit else "-", "quota": quota,
                              "status": f if isinstance(f, str) else "ok"}
    if isinstance(f, Figures):
        io = f.io
        out.update(capacity=f.capacity / MIB, free=f.free / MIB, used=f.used / MIB, provisioned=f.provisioned / MIB,
                   volumes=f.volumes, read=io.get("read_bytes_sec", 0) / MIB if io else None,
                   write=io.get("write_bytes_sec", 0) / MIB if io else None,
                   iops=round(io.get("read_op_per_sec", 0) + io.get("write_op_per_sec", 0)) if io else None)
    return out


def run(args: argparse.Namespace) -> int:
    svc = VolumeService(config.load())
    if args.action in ("add", "modify", "remove", "project", "remove-project"):
        print("\n".join(_change(svc, args)))
        return 0
    if args.action == "list-projects":
        fields = {"name": Field("Name"), "quota_gib": Field("QuotaGiB", numeric=True),
                  "quota_volumes": Field("QuotaDisks", numeric=True)}
        rows = [{"name": p.name, "quota_gib": f"{p.quota_gib:g}", "quota_volumes": p.quota_volumes}
                for p in svc.catalogue.projects]
        print("\n".join(table(rows, tuple(fields), fields)))
        return 0
    if args.action == "show":
        r = row(backend_admin.live(svc, [catalogue.check_backend_name(args.name)], io=True)[0])
        print("\n".join(show(r, FIELDS, FIELDS, args.units or "h", width=14)))
        return 0
    if args.action == "top":
        return _top(svc, args)
    names = check_options(args, FIELDS, DEFAULT_FIELDS)
    io = bool({"read", "write", "iops"} & set(names))
    lives = backend_admin.live(svc, [catalogue.check_backend_name(n) for n in args.names] or None, io=io)
    lines = table([row(x) for x in lives], names, FIELDS, headers=not args.no_headers, separator=args.separator,
                  units=args.units)
    print("\n".join(lines))
    return 0


def _change(svc: VolumeService, args: argparse.Namespace) -> list[str]:
    name = catalogue.check_backend_name(args.name)
    if args.action == "add":
        return backend_admin.add(svc, _values(args))
    if args.action == "modify":
        changes = {k: v for k, v in _values(args).items() if k != "name"}
        if not changes:
            raise UsageError("nothing to change: give at least one option (gnt-storage backend modify --help)")
        return backend_admin.modify(svc, name, changes)
    if args.action == "remove":
        return backend_admin.remove(svc, name)
    if args.action == "project":
        values: dict[str, object] = {"name": name}
        for key in ("quota_gib", "quota_volumes"):
            text = getattr(args, key)
            if text is not None:
                values[key] = _number(f"--{key.replace('_', '-')}", key, text)
        return backend_admin.set_project(svc, values)
    return backend_admin.remove_project(svc, name)


def _top(svc: VolumeService, args: argparse.Namespace) -> int:
    if not 0 < args.interval <= 3600 or args.count < 0:
        raise UsageError("--interval: give seconds in (0, 3600]; --count: a whole number >= 0")
    done = 0
    try:
        while True:
            rows = sorted((row(x) for x in backend_admin.live(svc, io=True)), key=SORTS[args.sort])
            screen = table(rows, TOP_FIELDS, FIELDS, units=args.units)
            if sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            stamp = time.strftime("%H:%M:%S")
            print(f"gnt-storage backend top - {stamp}, sorted by {args.sort}, every {args.interval:g} s "
                  f"(provisioned {sum(r.get('provisioned') or 0 for r in rows) * MIB / GIB:.1f} GiB)")
            print("\n".join(screen), flush=True)
            done += 1
            if args.count and done >= args.count:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 0
