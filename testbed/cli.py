"""`python -m testbed.ganeti ACTION --dir WORKDIR [...]`: the test bed for humans and `make demo`.

    net-up                    only the root bridge (then bring Ceph up on 198.51.100.1 yourself)
    up [--with-ceph]          nodes and cluster; --with-ceph also starts a local Ceph in --ceph-dir
                              (--no-ceph: nodes without Ceph files, e.g. --nodes 3 for a storage group)
    down [--with-ceph]        nodes (and Ceph) gone; the bridge too once nothing listens on it
    status                    what runs; exit 0 only if every node does
    shell [N]                 print the command that enters node N (default 0, the master)

Without --ceph-dir, Ceph lives in WORKDIR/ceph.
"""

from __future__ import annotations

import argparse
import os
import sys

from testbed import ceph
from testbed.ganeti import BRIDGE, HOST_ADDR, Testbed, TestbedError
from testbed.netns import NetnsError, link_exists


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testbed.ganeti", description=__doc__.splitlines()[0],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("action", choices=("net-up", "up", "down", "status", "shell"))
    parser.add_argument("node", nargs="?", type=int, default=0, help="node index for shell")
    parser.add_argument("--dir", required=True, help="work directory of the test bed")
    parser.add_argument("--ceph-dir", default="", help=f"directory of a local Ceph bound to {HOST_ADDR}")
    parser.add_argument("--with-ceph", action="store_true", help="start (up) or stop (down) that Ceph too")
    parser.add_argument("--ceph-port", type=int, default=ceph.DEFAULT_PORT)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--no-ceph", action="store_true", help="nodes without any Ceph client files "
                        "(for gnt-storage init-distributed-storage)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tb = Testbed(args.dir, None if args.no_ceph else args.ceph_dir or os.path.join(args.dir, "ceph"), args.nodes)
    try:
        if args.action == "net-up":
            tb.network_up()
        elif args.action == "up":
            if args.with_ceph:
                tb.network_up()
                ceph.up(tb.ceph_dir, HOST_ADDR, args.ceph_port)
            tb.up()
            print(f"master {tb.master}; enter it with: {' '.join(tb.enter_argv(0))} bash -l")
        elif args.action == "down":
            if args.with_ceph:
                ceph.bed_down(tb)
            else:
                tb.down()
        elif args.action == "status":
            nodes = tb.status()
            print(f"bridge {BRIDGE}: {'up' if link_exists(BRIDGE) else 'absent'}")
            for name, pids in nodes.items():
                print(f"{name}: {'running, holder pid ' + ','.join(map(str, pids)) if pids else 'stopped'}")
            return 0 if all(nodes.values()) else 1
        else:
            print(" ".join(tb.enter_argv(args.node)) + " bash -l")
    except (TestbedError, NetnsError, ceph.CephError, OSError, ValueError) as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    return 0
