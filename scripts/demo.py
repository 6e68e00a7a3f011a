#!/usr/bin/env python3
"""`make demo`: the local Ceph, the provider walked through Ganeti's calls, then real Ganeti.

First the provider is installed as Ganeti would find it and its executables
are run with the environment Ganeti's noded gives them, against a real Ceph
cluster; each step prints what Ganeti would see. Then a one-node Ganeti
cluster runs a KVM instance on an RBD disk (scripts/demo_ganeti.py).
Everything is brought down at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from extstorage import install  # noqa: E402
from ganeti_ceph import config  # noqa: E402
from ganeti_ceph.errors import GanetiCephError, run_main  # noqa: E402
from scripts import demo_ganeti  # noqa: E402

GNT_STORAGE = os.path.join(os.path.dirname(sys.executable), "gnt-storage")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str) -> None:
    print("$ " + " ".join(argv), flush=True)
    if subprocess.run(argv, check=False).returncode != 0:
        raise GanetiCephError(f"{os.path.basename(argv[0])} failed (see above)")


class Provider:
    """Runs the installed provider's actions as noded does."""

    def __init__(self, path: str, cfg_path: str) -> None:
        self.path, self.cfg_path = path, cfg_path

    def __call__(self, action: str, vol: str, access: str, ok: bool = True, **env: str) -> str:
        full = {"GANETI_CEPH_CONFIG": self.cfg_path, "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "VOL_NAME": vol, "EXTP_PROVIDER": "rbd", "EXTP_ACCESS": access, **env}
        shown = " ".join(f"{k}={v}" for k, v in env.items())
        print(f"$ {shown} VOL_NAME={vol} EXTP_ACCESS={access} rbd/{action}", flush=True)
        res = subprocess.run([os.path.join(self.path, action)], env=full, cwd=self.path, capture_output=True,
                             text=True, check=False)
        for line in res.stdout.splitlines() or ([""] if action == "attach" else []):
            print(f"  stdout: {line!r}")
        for line in res.stderr.splitlines():
            print(f"  stderr: {line}")
        if (res.returncode == 0) != ok:
            raise GanetiCephError(f"{action} exited {res.returncode}, expected {'success' if ok else 'failure'}")
        return res.stdout


def walk(rbd: Provider, access: str) -> None:
    vol = f"{uuid.uuid4()}.ext.disk0"
    step(f"[{access}] gnt-instance add: create a 1024 MiB volume, attach it, open it")
    rbd("create", vol, access, VOL_SIZE="1024", VOL_UUID=vol[:36])
    out = rbd("attach", vol, access)
    rbd("open", vol, access, VOL_OPEN_EXCLUSIVE="True")
    rbd("setinfo", vol, access, VOL_METADATA="originstname+demo1")
    dev = out.splitlines()[0]
    if dev:
        step(f"[{access}] write 4 MiB through the block device {dev}")
        run("dd", "if=/dev/urandom", f"of={dev}", "bs=1M", "count=4", "oflag=direct", "status=none")
    step(f"[{access}] gnt-instance grow-disk: 1024 -> 2048 MiB, then a shrink that must be refused")
    rbd("grow", vol, access, VOL_SIZE="1024", VOL_NEW_SIZE="2048")
    rbd("grow", vol, access, ok=False, VOL_SIZE="2048", VOL_NEW_SIZE="512")
    step(f"[{access}] gnt-backup export: snapshot as {vol}.snap, read it, remove it")
    rbd("snapshot", vol, access, VOL_SNAPSHOT_NAME=f"{vol}.snap", VOL_SNAPSHOT_SIZE="2048")
    snap_dev = rbd("attach", f"{vol}.snap", access).splitlines()[0]
    if snap_dev:
        run("dd", f"if={snap_dev}", "of=/dev/null", "bs=1M", "count=4", "status=none")
    rbd("detach", f"{vol}.snap", access)
    rbd("remove", f"{vol}.snap", access)
    step(f"[{access}] remove while attached is refused; gnt-instance remove: detach, remove (twice: idempotent)")
    if dev:
        rbd("remove", vol, access, ok=False)
    rbd("close", vol, access)
    rbd("detach", vol, access)
    rbd("remove", vol, access)
    rbd("remove", vol, access)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default="/var/lib/ganeti-ceph/demo")
    parser.add_argument("--port", default="13800")
    parser.add_argument("--keep", action="store_true", help="leave the Ganeti demo cluster running at the end")
    parser.add_argument("--no-ganeti", action="store_true", help="only the provider walk, no Ganeti cluster")
    args = parser.parse_args()
    step("bring up the local Ceph cluster (gnt-storage local-cluster up)")
    run(GNT_STORAGE, "local-cluster", "up", "--dir", args.dir, "--port", args.port)
    try:
        cfg_path = os.path.join(args.dir, "ganeti-ceph.yaml")
        cfg = config.load(cfg_path)
        step("install the ExtStorage provider `rbd` (ganeti-ceph-setup install)")
        path = install.install(os.path.join(args.dir, "extstorage"), sys.executable,
                               log_dir=os.path.join(args.dir, "extstorage-log"))
        print(f"provider in {path}; kernelspace mapper on this host: {cfg.mapper}")
        rbd = Provider(path, cfg_path)
        walk(rbd, "userspace")
        walk(rbd, "kernelspace")
    finally:
        step("bring the provider's cluster down (gnt-storage local-cluster down)")
        run(GNT_STORAGE, "local-cluster", "down", "--dir", args.dir)
    if not args.no_ganeti:
        # Beside, not inside, the provider's cluster dir: local-cluster refuses foreign files there.
        demo_ganeti.main(args.dir + "-ganeti", args.dir + "-ganeti-ceph", int(args.port) + 100, args.keep)
    step("demo finished")
    return 0


if __name__ == "__main__":
    run_main("demo", main)
