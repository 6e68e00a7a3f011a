#!/usr/bin/env python3
"""`make demo`: bring up the local cluster and walk an RBD volume through its life.

Every step runs through ganeti-ceph's own code against a real Ceph cluster
and prints what it did. The cluster is brought down at the end unless
--keep is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from extstorage import remove as removal  # noqa: E402
from extstorage import volumes  # noqa: E402
from extstorage.access import userspace_uri  # noqa: E402
from ganeti_ceph import config  # noqa: E402
from ganeti_ceph.session import Session  # noqa: E402

GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str) -> None:
    print("$ " + " ".join(argv), flush=True)
    subprocess.run(argv, check=True)


def volume_walk(cfg: config.Config) -> None:
    vol = f"{uuid.uuid4()}.ext.disk0"
    pool = cfg.pool
    with Session(cfg) as s:
        step(f"create {pool}/{vol}, 1024 MiB, as client.{cfg.client_id}")
        volumes.create(s, pool, vol, 1024, metadata={volumes.META_UUID: vol.split(".")[0]})
        print(f"created; size {volumes.size_mib(s, pool, vol)} MiB")

        step("attach (userspace access): what Ganeti hands to KVM")
        print(f"kvm:{userspace_uri(pool, vol, cfg.client_id)}")

        step("grow to 2048 MiB, then repeat it (idempotent), then try to shrink")
        print(f"size now {volumes.grow(s, pool, vol, 2048)} MiB; repeat: {volumes.grow(s, pool, vol, 2048)} MiB")
        try:
            volumes.grow(s, pool, vol, 512)
        except Exception as exc:
            print(f"refused as it should be: {exc}")

        step(f"snapshot as volume {vol}.snap (point-in-time copy-on-write copy)")
        removal.snapshot(s, pool, vol, f"{vol}.snap")
        print(f"{vol}.snap: {volumes.size_mib(s, pool, vol + '.snap')} MiB")

        step("remove the snapshot volume, then the volume")
        removal.remove(s, pool, f"{vol}.snap")
        removal.remove(s, pool, vol)
        print(f"removed; a repeat is a no-op: removed again = {removal.remove(s, pool, vol)}")
        import rbd

        with s.ioctx() as ioctx:
            left = [n for n in rbd.RBD().list(ioctx) if n.startswith(vol.split('.')[0])]
        print(f"images left for this volume: {left or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="/var/lib/ganeti-ceph/demo")
    parser.add_argument("--port", default="13300")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    args = parser.parse_args()
    step("bring up the local Ceph cluster (gnt-storage local-cluster up)")
    run(GNT_STORAGE, "local-cluster", "up", "--dir", args.dir, "--port", args.port)
    try:
        volume_walk(config.load(os.path.join(args.dir, "ganeti-ceph.yaml")))
    finally:
        if args.keep:
            step(f"cluster kept running: `gnt-storage local-cluster down --dir {args.dir}` stops it")
        else:
            step("bring the cluster down (gnt-storage local-cluster down)")
            run(GNT_STORAGE, "local-cluster", "down", "--dir", args.dir)
    step("demo finished")
    return 0


if __name__ == "__main__":
    from ganeti_ceph.errors import run_main

    run_main("demo", main)
