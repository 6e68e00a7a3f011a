#!/usr/bin/python3 -I
"""Test bed only, never shipped: an `rbd` command that stands in for krbd, which this machine's kernel lacks.

Ganeti's own `-t rbd` template (ganeti/storage/bdev.py, RADOSBlockDevice) maps every disk with the rbd CLI's
kernel client: `rbd map -p POOL NAME`, finds the device with `rbd showmapped --format json` and drops it with
`rbd unmap DEV`. This kernel has no rbd module, so on the bed those three are served here by the provider's
fuse-loop mapper (ganeti_ceph.rbd.mappers.fuse_loop: rbd-fuse of the image plus a loop device), as client.admin
like Ganeti's rbd CLI; every other subcommand (create, rm, resize, info...) goes to /usr/bin/rbd unchanged.
A node gets it (as /usr/local/sbin/rbd, before /usr/bin on the node's PATH, which Ganeti's daemons hand on to
what they run) only while a test asks for it: `install` and `uninstall`, run from the host.

The mappings live under `<provider run_dir>/krbd-standin`, apart from the provider's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the host side only; the node runs this file alone
    from ganeti_ceph.rbd.mappers.fuse_loop import FuseLoop
    from testbed.ganeti import Testbed

REAL_RBD = "/usr/bin/rbd"
NODE_PATH = "/usr/local/sbin/rbd"
ADMIN_KEYRING = "/etc/ceph/ceph.client.admin.keyring"
PROVIDER_CONFIG = "/etc/ganeti/ceph.yaml"
SUBDIR = "krbd-standin"
HANDLED = ("map", "showmapped", "unmap", "device")


def _mapper() -> tuple[FuseLoop, str]:
    from ganeti_ceph import config
    from ganeti_ceph.rbd.mappers.fuse_loop import FuseLoop

    cfg = config.load(PROVIDER_CONFIG)
    cfg = dataclasses.replace(cfg, client_id="admin", keyring=ADMIN_KEYRING,
                              run_dir=os.path.join(cfg.run_dir, SUBDIR))
    with open(cfg.conf) as fh:
        found = re.search(r"^\s*fsid\s*=\s*(\S+)", fh.read(), re.MULTILINE)
    if not found:
        raise SystemExit(f"rbd (krbd stand-in): no fsid in {cfg.conf}")
    return FuseLoop(cfg), found.group(1)


def _mapped() -> list[tuple[object, str]]:
    from ganeti_ceph.rbd.mappers import table

    mapper, fsid = _mapper()
    return [(m.target, dev) for m in table.mapped(mapper.cfg.run_dir, fsid) if (dev := mapper.find(m.target))]


def main(argv: list[str]) -> int:
    sub = next((a for a in argv if not a.startswith("-")), "")
    if sub == "device":  # `rbd device map|unmap|list`: the same as the short forms
        argv = argv[argv.index("device") + 1:]
        sub = {"list": "showmapped"}.get(argv[0] if argv else "", argv[0] if argv else "")
        argv = [sub, *argv[1:]]
    if sub not in HANDLED:
        os.execv(REAL_RBD, [REAL_RBD, *argv])
    from ganeti_ceph.errors import GanetiCephError
    from ganeti_ceph.rbd.mappers.table import Target

    p = argparse.ArgumentParser(prog="rbd")
    p.add_argument("words", nargs="*")
    p.add_argument("-p", "--pool", default="rbd")
    p.add_argument("--format", default="plain")
    args, _ = p.parse_known_intermixed_args(argv)
    args.spec = args.words[1] if len(args.words) > 1 else None
    try:
        if sub == "showmapped":
            rows = [{"id": str(i), "pool": t.pool, "namespace": "", "name": t.image, "snap": "-", "device": dev}
                    for i, (t, dev) in enumerate(_mapped())]
            if args.format == "json":
                print(json.dumps(rows))
            else:
                print("\n".join(f"{r['id']} {r['pool']} {r['name']} {r['snap']} {r['device']}" for r in rows))
            return 0
        if not args.spec:
            print(f"rbd: {sub} needs an image or device", file=sys.stderr)
            return 22
        if sub == "map":
            pool, _, image = args.spec.rpartition("/")
            mapper, fsid = _mapper()
            print(mapper.map(Target(fsid, pool or args.pool, image)))
            return 0
        for t, dev in _mapped():  # unmap DEV (or POOL/IMAGE)
            if args.spec in (dev, f"{t.pool}/{t.image}"):
                _mapper()[0].unmap(t)
                return 0
        print(f"rbd: {args.spec}: not a mapped image or snapshot", file=sys.stderr)
        return 22
    except GanetiCephError as exc:
        print(f"rbd: {sub} failed: {exc.message}", file=sys.stderr)
        return 1


# -- host side: what a test runs -------------------------------------------------------

def install(tb: Testbed, index: int, admin_keyring: str) -> None:
    """Give node `index` this stand-in and the bed Ceph's admin keyring (node-private files: its /usr and /etc
    are overlays of its own)."""
    with open(admin_keyring) as fh:
        keyring = fh.read()
    tb.run(index, ["install", "-m", "0600", "/dev/stdin", ADMIN_KEYRING], input=keyring)
    with open(__file__) as fh:
        tb.run(index, ["install", "-D", "-m", "0755", "/dev/stdin", NODE_PATH], input=fh.read())


def uninstall(tb: Testbed, index: int) -> None:
    """Drop what `install` gave, after unmapping whatever the stand-in still maps there."""
    script = (f"[ -x {NODE_PATH} ] && for d in $({NODE_PATH} showmapped | awk '{{print $5}}'); do "
              f"{NODE_PATH} unmap $d; done; rm -f {NODE_PATH} {ADMIN_KEYRING}")
    tb.run(index, ["sh", "-c", script], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
