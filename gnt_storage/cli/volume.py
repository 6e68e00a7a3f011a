"""`gnt-storage volume list|show`: the volume inventory (ganeti_ceph/rbd/inventory.py), in gnt-* style.

Translation only: the arguments become one inventory call, its volumes become
Ganeti-style table lines (or `show`'s field lines). Run on the Ganeti master:
the owner of each image comes from one `gnt-instance list`.
"""

from __future__ import annotations

import argparse

from ganeti_ceph import config
from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import inventory

NAME = "volume"
HELP = "list the RBD volumes with their owner instance and disk, size, use, mappings, snapshots (on the master)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="one line per volume (image) in our pools, orphans included (instance -)")
    ls.add_argument("names", nargs="*", metavar="NAME", help="only these images")
    ls.add_argument("--instance", metavar="I", help="only the volumes of instance I")
    ls.add_argument("--backend", metavar="B", help="only the volumes of backend B")
    ls.add_argument("-o", "--output", metavar="FIELDS", default=",".join(inventory.DEFAULT_FIELDS),
                    help=f"comma-separated fields, or +f1,f2 to add to the defaults; fields: "
                         f"{', '.join(inventory.FIELDS)} (default: {','.join(inventory.DEFAULT_FIELDS)})")
    ls.add_argument("--no-headers", action="store_true", help="no header line")
    ls.add_argument("--separator", metavar="S", help="separate fields by S, unpadded (sizes then in MiB)")
    _units(ls)
    sh = sub.add_parser("show", help="every field of one volume, its snapshots and open records")
    sh.add_argument("target", metavar="NAME|INSTANCE:DISK", help="an image name, or an instance's disk by Ganeti's "
                    "index, name or UUID")
    _units(sh)


def _units(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", choices=inventory.UNITS,
                        help="sizes in h (human: M, G, T), m, g or t (default: h, or m with --separator)")


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        inventory.parse_target(args.target)  # bad input refused before anything is read
        vol = inventory.one(config.load(), args.target)
        print("\n".join(inventory.show(vol, args.units or "h")))
        return 0
    fields = inventory.check_fields(args.output)
    if args.separator == "":
        raise UsageError("--separator: give a non-empty separator")
    vols = inventory.volumes(config.load(), args.names, instance=args.instance, backend=args.backend)
    lines = inventory.table([inventory.row(v) for v in vols], fields, headers=not args.no_headers,
                            separator=args.separator, units=args.units)
    if lines:
        print("\n".join(lines))
    return 0
