"""`gnt-storage image import|list|remove`: disk image files made RBD templates that disks clone.

Translation only: the work is ganeti_ceph/rbd/images.py; here the arguments, the table of `list` in the
gnt-* style (`--output`, `--no-headers`, `--separator`) and the lines saying what was done.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd.images import FORMATS, ImageInfo

NAME = "image"
HELP = "import raw or qcow2 files as RBD templates (disks with origin=NAME are thin clones), list, remove them"


def _size(mib: int) -> str:
    """A size as Ganeti's lists show it: M below a GiB, else G (or T) with one decimal."""
    if mib < 1024:
        return f"{mib}M"
    if mib < 1024 * 1024:
        return f"{mib / 1024:.1f}G"
    return f"{mib / 1024 / 1024:.1f}T"


# field -> (header, value of one row)
FIELDS: dict[str, tuple[str, Callable[[ImageInfo], str]]] = {
    "name": ("Name", lambda i: i.name),
    "pool": ("Pool", lambda i: i.pool),
    "size": ("Size", lambda i: _size(i.size_mib)),
    "format": ("Format", lambda i: i.format),
    "from": ("ImportedFrom", lambda i: i.source),
    "clones": ("Clones", lambda i: str(len(i.clones))),
    "clone_list": ("CloneList", lambda i: ",".join(i.clones)),
    "created": ("Created", lambda i: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(i.created))),
}
DEFAULT_FIELDS = ("name", "pool", "size", "format", "from", "clones", "created")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    imp = sub.add_parser("import", help="convert FILE (raw or qcow2) into the RBD image NAME, made a template "
                         "(a protected snapshot) that origin=NAME clones")
    imp.add_argument("file", metavar="FILE", help="the disk image file")
    imp.add_argument("name", metavar="NAME", help="the image's name (lower-case letters, digits, '.', '-')")
    imp.add_argument("--format", choices=FORMATS, help="FILE's format (default: as qemu-img detects it)")
    _pool(imp)
    ls = sub.add_parser("list", help="list the imported images of a pool")
    ls.add_argument("-o", "--output", default="", metavar="FIELDS",
                    help=f"comma-separated fields ({', '.join(FIELDS)}); +FIELDS adds to the default "
                    f"({','.join(DEFAULT_FIELDS)})")
    ls.add_argument("--no-headers", action="store_true", help="no header line")
    ls.add_argument("--separator", default=None, help="column separator (default: aligned with spaces)")
    _pool(ls)
    rm = sub.add_parser("remove", help="remove an imported image (refused while disks are clones of it)")
    rm.add_argument("name", metavar="NAME")
    _pool(rm)


def _pool(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", default="", help="the pool (default: the config's pool)")


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


def table(rows: list[ImageInfo], names: list[str], headers: bool = True, separator: str | None = None) -> list[str]:
    """The lines of a gnt-* list (pure): aligned columns, or joined by `separator`."""
    cells = [[FIELDS[f][1](r) for f in names] for r in rows]
    if headers:
        cells.insert(0, [FIELDS[f][0] for f in names])
    if separator is not None:
        return [separator.join(c) for c in cells]
    widths = [max((len(c[i]) for c in cells), default=0) for i in range(len(names))]
    return [" ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip() for c in cells]


def run(args: argparse.Namespace) -> int:
    from ganeti_ceph import config
    from ganeti_ceph.rbd import images

    if args.action == "list":
        names = fields(args.output)  # bad input fails before the config or Ceph is read
        for line in table(images.list_images(config.load(), args.pool), names, not args.no_headers,
                          args.separator):
            print(line)
        return 0
    if args.action == "import":
        info = images.import_image(config.load(), args.file, args.name, args.format, args.pool)
        print(f"imported {info.source} ({info.format}, {_size(info.size_mib)}) as {info.pool}/{info.name}; "
              f"disks clone it with origin={info.name}")
        return 0
    if images.remove_image(config.load(), args.name, args.pool):
        print(f"removed image {args.name}")
    else:
        print(f"image {args.name} was gone already; its registry entry removed")
    return 0
