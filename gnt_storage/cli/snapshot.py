"""`gnt-storage snapshot add|list|remove|revert`: user snapshots of an instance's rbd disks (on the master).

Translation only: the work is ganeti_ceph/rbd/user_snapshots.py; here the arguments, the table of `list`
in the gnt-* style (`--output`, `--no-headers`, `--separator`: _listing.py) and the lines saying what was done.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from ganeti_ceph.errors import UsageError
from ganeti_ceph.log import warn
from gnt_storage.cli import _listing
from gnt_storage.cli._listing import Field

if TYPE_CHECKING:
    from ganeti_ceph.rbd.user_snapshots import UserSnapshot

NAME = "snapshot"
HELP = "take, list, revert to and remove user snapshots of an instance's rbd disks (on the Ganeti master)"
MIB = 1024 * 1024

# field -> how `list` shows it; a row is row(disk index, UserSnapshot, pool, image)
FIELDS: dict[str, Field] = {
    "disk": Field("Disk"),
    "name": Field("Name"),
    "created": Field("Created"),
    "size": Field("Size", numeric=True),  # text, "64M", with --separator too (no --units here)
    "protected": Field("Protected"),
    "clones": Field("Clones"),
    "state": Field("State"),
    "image": Field("Image"),
}
DEFAULT_FIELDS = ("disk", "name", "created", "size", "clones", "state")


def row(disk: int, snap: UserSnapshot, pool: str, image: str) -> dict[str, object]:
    """One snapshot of an instance's disk as a row of `list` (pure)."""
    return {"disk": disk, "name": snap.name,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(snap.created)),
            "size": f"{snap.size // MIB}M", "protected": "Y" if snap.protected else "N",
            "clones": ",".join(snap.clones), "state": snap.state, "image": f"{pool}/{image}"}


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
    _listing.add_options(ls, FIELDS, DEFAULT_FIELDS, units=False)
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


def run(args: argparse.Namespace) -> int:
    from ganeti_ceph import config
    from ganeti_ceph.rbd.service import VolumeService
    from ganeti_ceph.rbd.user_snapshots import InstanceSnapshots, check_name

    # Refusals of the input come before anything is asked of Ganeti or Ceph.
    if args.action == "list":
        names = _listing.check_options(args, FIELDS, DEFAULT_FIELDS)
    elif args.name is not None:
        check_name(args.name)
    if args.action == "add" and args.keep is not None and args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least 1 snapshot")
    snaps = InstanceSnapshots(VolumeService(config.load(config.config_path())))
    if args.action == "list":
        rows = []
        for vol, found in snaps.listing(args.instance, args.disk):
            rows += [row(vol.disk.index, s, vol.pool, vol.image) for s in found.snaps]
            if found.marker:
                warn(f"{vol.label}: a revert to {found.marker.to} stopped halfway (the state before is snapshot "
                     f"{found.marker.safety}); finish it: gnt-storage snapshot revert {vol.instance} "
                     f"{vol.disk.index} {found.marker.to}")
        for line in _listing.table(rows, names, FIELDS, not args.no_headers, args.separator):
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
