"""`gnt-storage image import|list|remove`: disk image files made RBD templates that disks clone.

Translation only: the work is ganeti_ceph/rbd/images.py; here the arguments, the table of `list` in the
gnt-* style (`--output`, `--no-headers`, `--separator`, `--units`: _listing.py) and the lines saying what was done.
"""

from __future__ import annotations

import argparse
import time

from ganeti_ceph.rbd.images import FORMATS, ImageInfo
from gnt_storage.cli import _listing
from gnt_storage.cli._listing import Field

NAME = "image"
HELP = "import raw or qcow2 files as RBD templates (disks with origin=NAME are thin clones), list, remove them"


# field -> how `list` shows it; a row is row(ImageInfo)
FIELDS: dict[str, Field] = {
    "name": Field("Name"),
    "pool": Field("Pool"),
    "size": Field("Size", numeric=True, mib=True),
    "format": Field("Format"),
    "from": Field("ImportedFrom"),
    "clones": Field("Clones", numeric=True),
    "clone_list": Field("CloneList"),
    "created": Field("Created"),
}
DEFAULT_FIELDS = ("name", "pool", "size", "format", "from", "clones", "created")


def row(i: ImageInfo) -> dict[str, object]:
    """One image as a row of `list` (pure)."""
    return {"name": i.name, "pool": i.pool, "size": i.size_mib, "format": i.format, "from": i.source,
            "clones": len(i.clones), "clone_list": ",".join(i.clones),
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(i.created))}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="convert FILE (raw or qcow2) into the RBD image NAME, made a template "
                         "(a protected snapshot) that origin=NAME clones")
    imp.add_argument("file", metavar="FILE", help="the disk image file")
    imp.add_argument("name", metavar="NAME", help="the image's name (lower-case letters, digits, '.', '-')")
    imp.add_argument("--format", choices=FORMATS, help="FILE's format (default: as qemu-img detects it)")
    _pool(imp)
    ls = sub.add_parser("list", help="list the imported images of a pool")
    _listing.add_options(ls, FIELDS, DEFAULT_FIELDS)
    _pool(ls)
    rm = sub.add_parser("remove", help="remove an imported image (refused while disks are clones of it)")
    rm.add_argument("name", metavar="NAME")
    _pool(rm)


def _pool(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="", help="the pool (default: the config's pool)")


def run(args: argparse.Namespace) -> int:
    from ganeti_ceph import config
    from ganeti_ceph.rbd import images

    if args.action == "list":
        names = _listing.check_options(args, FIELDS, DEFAULT_FIELDS)  # before the config or Ceph is read
        rows = [row(i) for i in images.list_images(config.load(), args.pool)]
        for line in _listing.table(rows, names, FIELDS, not args.no_headers, args.separator, args.units):
            print(line)
        return 0
    if args.action == "import":
        info = images.import_image(config.load(), args.file, args.name, args.format, args.pool)
        size = _listing.format_unit(info.size_mib, "h")
        print(f"imported {info.source} ({info.format}, {size}) as {info.pool}/{info.name}; disks clone it with "
              f"origin={info.name}")
        return 0
    if images.remove_image(config.load(), args.name, args.pool):
        print(f"removed image {args.name}")
    else:
        print(f"image {args.name} was gone already; its registry entry removed")
    return 0
