"""`gnt-storage snapshot add|list|remove|revert`: user snapshots of an instance's rbd disks (on the master).

Translation only: the work is ganeti_ceph/rbd/user_snapshots.py; here the arguments, the table of `list`
in the gnt-* style (`--output`, `--no-headers`, `--separator`) and the lines saying what was done.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ganeti_ceph.errors import UsageError
from ganeti_ceph.log import warn

NAME = "snapshot"
HELP = "take, list, revert to and remove user snapshots of an instance's rbd disks (on the Ganeti master)"
MIB = 1024 * 1024

# field -> (header, value of one row); a row is (instance disk index, UserSnapshot, pool, image)
FIELDS: dict[str, tuple[str, Callable]] = {
    "disk": ("Disk", lambda r: str(r[0])),
    "name": ("Name", lambda r: r[1].name),
    "created": ("Created", lambda r: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r[1].created))),
    "size": ("Size", lambda r: f"{r[1].size // MIB}M"),
    "protected": ("Protected", lambda r: "Y" if r[1].protected else "N"),
    "clones": ("Clones", lambda r: ",".join(r[1].clones)),
    "state": ("State", lambda r: r[1].state),
    "image": ("Image", lambda r: f"{r[2]}/{r[3]}"),
}
DEFAULT_FIELDS = ("disk", "name", "created", "size", "clones", "state")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="take a snapshot of a disk (the instance may run: crash-consistent)")
    _target(add)
    add.add_argument("name", nargs="?", help="the snapshot's name (default: the UTC time, 20261201T051140Z)")
    add.add_argument("--keep", type=int, metavar="N", help="then remove the oldest user snapshots of the disk "
                     "beyond N (those with clones are kept)")
    ls = sub.add_parser("list", help="list the user snapshots of an instance's rbd disks")
    ls.add_argument("instance")
    ls.add_argument("disk", nargs="?", help="Ganeti's disk index, name or UUID (default: every rbd disk)")
    ls.add_argument("-o", "--output", default="", metavar="FIELDS",
                    help=f"comma-separated fields ({', '.join(FIELDS)}); +FIELDS adds to the default "
                    f"({','.join(DEFAULT_FIELDS)})")
    ls.add_argument("--no-headers", action="store_true", help="no header line")
    ls.add_argument("--separator", default=None, help="column separator (default: aligned with spaces)")
    rm = sub.add_parser("remove", help="remove a user snapshot (refused while clones depend on it)")
    _target(rm)
    rm.add_argument("name")
    rv = sub.add_parser("revert", help="roll a disk back to a user snapshot (instance stopped; the state before "
                        "is kept as a new snapshot)")
    _target(rv)
    rv.add_argument("name")


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("instance")
    p.add_argument("disk", help="Ganeti's disk index, name or UUID")


def fields(spec: str) -> list[str]:
    """`--output` as Ganeti reads it: a list, or +list added to the default (pure)."""
    if not spec:
        return list(DEFAULT_FIELDS)
    extra = spec.startswith("+")
    names = [f for f in spec.lstrip("+").split(",") if f]
    bad = [f for f in names if f not in FIELDS]
    if bad or not names:
        raise UsageError(f"--output {spec}: unknown field(s) {', '.join(bad) or '(none given)'}; "
                         f"known: {', '.join(FIELDS)}")
    return [*DEFAULT_FIELDS, *names] if extra else names


def table(rows: list[tuple], names: list[str], headers: bool = True, separator: str | None = None) -> list[str]:
    """The lines of a gnt-* list (pure): aligned columns, or joined by `separator`."""
    cells = [[FIELDS[f][1](r) for f in names] for r in rows]
    if headers:
        cells.insert(0, [FIELDS[f][0] for f in names])
    if separator is not None:
        return [separator.join(c) for c in cells]
    widths = [max((len(c[i]) for c in cells), default=0) for i in range(len(names))]
    return [" ".join(v.rjust(w) if f == "size" else v.ljust(w) for f, v, w in zip(names, c, widths, strict=True))
            .rstrip() for c in cells]


def run(args: argparse.Namespace) -> int:
    from ganeti_ceph import config
    from ganeti_ceph.rbd.service import VolumeService
    from ganeti_ceph.rbd.user_snapshots import InstanceSnapshots, check_name

    # Refusals of the input come before anything is asked of Ganeti or Ceph.
    if args.action == "list":
        names = fields(args.output)
    elif args.name is not None:
        check_name(args.name)
    if args.action == "add" and args.keep is not None and args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least 1 snapshot")
    snaps = InstanceSnapshots(VolumeService(config.load(config.config_path())))
    if args.action == "list":
        rows = []
        for vol, found in snaps.listing(args.instance, args.disk):
            rows += [(vol.disk.index, s, vol.pool, vol.image) for s in found.snaps]
            if found.marker:
                warn(f"{vol.label}: a revert to {found.marker.to} stopped halfway (the state before is snapshot "
                     f"{found.marker.safety}); finish it: gnt-storage snapshot revert {vol.instance} "
                     f"{vol.disk.index} {found.marker.to}")
        for line in table(rows, names, not args.no_headers, args.separator):
            print(line)
    elif args.action == "add":
        vol, added = snaps.add(args.instance, args.disk, args.name, args.keep)
        print(f"{vol.label}: snapshot {added.name} taken")
        for name in added.pruned:
            print(f"{vol.label}: snapshot {name} removed (beyond --keep {args.keep})")
        for name, why in added.spared:
            print(f"{vol.label}: snapshot {name} kept beyond --keep {args.keep}: {why}")
    elif args.action == "remove":
        vol = snaps.remove(args.instance, args.disk, args.name)
        print(f"{vol.label}: snapshot {args.name} removed")
    elif args.action == "revert":
        vol, done = snaps.revert(args.instance, args.disk, args.name)
        how = "finished the revert" if done.resumed else "reverted"
        print(f"{vol.label}: {how} to snapshot {done.to}; the state before is snapshot {done.safety} (undo: "
              f"gnt-storage snapshot revert {vol.instance} {vol.disk.index} {done.safety})")
    return 0
