"""`gnt-storage volume list|show`: the volume inventory (ganeti_ceph/rbd/inventory.py), in gnt-* style.

Translation only: the arguments become one inventory call, its volumes' values become
Ganeti-style table lines (_listing.py) or `show`'s field lines. Run on the Ganeti master:
the owner of each image comes from one `gnt-instance list`.
"""

from __future__ import annotations

import argparse

from ganeti_ceph import config
from ganeti_ceph.rbd import inventory
from ganeti_ceph.rbd.inventory import Volume
from gnt_storage.cli import _listing
from gnt_storage.cli._listing import Field

NAME = "volume"
HELP = "list the RBD volumes with their owner instance and disk, size, use, mappings, snapshots (on the master)"

# field -> how `list` and `show` show it; a row is inventory.row(Volume)
FIELDS: dict[str, Field] = {
    "name": Field("Name"), "instance": Field("Instance"), "disk": Field("Disk"), "backend": Field("Backend"),
    "pool": Field("Pool"), "size": Field("Size", numeric=True, mib=True), "used": Field("Used", numeric=True, mib=True),
    "access": Field("Access"), "mapped": Field("Mapped"), "open": Field("Open"),
    "snapshots": Field("Snapshots", numeric=True), "parent": Field("Parent"),
}
DEFAULT_FIELDS = ("name", "instance", "disk", "backend", "size", "used", "access", "mapped", "snapshots")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="one line per volume (image) in our pools, orphans included (instance -)")
    ls.add_argument("names", nargs="*", metavar="NAME", help="only these images")
    ls.add_argument("--instance", metavar="I", help="only the volumes of instance I")
    ls.add_argument("--backend", metavar="B", help="only the volumes of backend B")
    _listing.add_options(ls, FIELDS, DEFAULT_FIELDS)
    sh = sub.add_parser("show", help="every field of one volume, its snapshots and open records")
    sh.add_argument("target", metavar="NAME|INSTANCE:DISK", help="an image name, or an instance's disk by Ganeti's "
                    "index, name or UUID")
    _listing.add_units(sh)


def show(v: Volume, units: str = "h") -> list[str]:
    """Every field of one volume, one per line, then its snapshots and open records in full (pure)."""
    out = _listing.show(inventory.details(v), [f for f in FIELDS if f not in ("snapshots", "open")], FIELDS, units)
    width = max(len(spec.header) for spec in FIELDS.values()) + 1
    out.append("Open:" if v.holders else f"{'Open:'.ljust(width)} -")
    out += [f"  {h.node}: {'exclusive' if h.exclusive else 'shared'}, ip {h.ip or 'unknown'}" for h in v.holders]
    out.append(f"{'Snapshots:'.ljust(width)} {len(v.image.snapshots)}")
    out += [f"  {s}" for s in v.image.snapshots]
    return out


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        inventory.parse_target(args.target)  # bad input refused before anything is read
        vol = inventory.one(config.load(), args.target)
        print("\n".join(show(vol, args.units or "h")))
        return 0
    names = _listing.check_options(args, FIELDS, DEFAULT_FIELDS)
    vols = inventory.volumes(config.load(), args.names, instance=args.instance, backend=args.backend)
    lines = _listing.table([inventory.row(v) for v in vols], names, FIELDS, headers=not args.no_headers,
                           separator=args.separator, units=args.units)
    if lines:
        print("\n".join(lines))
    return 0
