"""Provider actions as whole processes, versus the `rbd` CLI doing the same work.

Ours: the installed executable <ext dir>/rbd/<action>, the very file Ganeti
runs, with the environment Ganeti gives it (VOL_NAME, VOL_SIZE, EXTP_*...,
see ganeti-contract.md) and GANETI_CEPH_CONFIG=<cluster dir>/ganeti-ceph.yaml.
Baseline: `rbd -c <dir>/ceph.conf --id ganeti --keyring ...`, the same
restricted client. Both sides hit one local cluster, brought up once for all
these benches (ctx.shared) and brought down at the end of the run; every
image a bench makes is removed before the next bench.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid

from harness import (
    GNT_STORAGE,
    SCRATCH,
    VENV_BIN,
    Ctx,
    Result,
    Shared,
    bench,
    clean_env,
    compare,
    log,
    run_quiet,
    time_cmd,
)

from extstorage.install import install
from ganeti_ceph import config as gconfig

RUNS = 9  # quick actions: more samples, since each is ~0.1 s and the machine is noisy
CLIENT = "ganeti"
POOL = "rbd"
VOL_MIB = 1024
TEMPLATE_MIB = 10 * 1024  # clone-create: the template image and the clones' size
TEMPLATE_DATA = "1G"  # an OS template: 1 GiB written in 10 GiB
CLONE_BASE_RUNS = 3  # `rbd cp` of the template takes seconds: fewer samples


class Cluster:
    """The shared local cluster and our provider installed for it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.conf = os.path.join(root, "ceph.conf")
        self.keyring = os.path.join(root, f"ceph.client.{CLIENT}.keyring")
        self.config = os.path.join(root, "ganeti-ceph.yaml")
        self.ext = os.path.join(SCRATCH, "provider-ext")  # not in root: local-cluster refuses foreign files there
        self.socket = os.path.join(SCRATCH, "agent.sock")

    @classmethod
    def start(cls, shared: Shared) -> Cluster:
        root, port = shared.slots.slot("provider-cluster")
        c = cls(root)
        shared.on_close(c.down)
        log(f"provider benches: bringing up the shared cluster in {root} (port {port})")
        time_cmd([GNT_STORAGE, "local-cluster", "up", "--dir", root, "--port", str(port)], timeout=300)
        shutil.rmtree(c.ext, ignore_errors=True)
        install(c.ext, os.path.join(VENV_BIN, "python"), os.path.join(c.ext, "log"))
        # The node agent, as deployed: the executables hand their calls to it.
        run_quiet([*c.agent_argv("start")])
        return c

    def agent_argv(self, action: str) -> list[str]:
        return [os.path.join(VENV_BIN, "ganeti-ceph-agent"), action, "--socket", self.socket,
                "--pidfile", os.path.join(SCRATCH, "agent.pid"), "--log", os.path.join(SCRATCH, "agent.log")]

    def down(self) -> None:
        """Stop the cluster, remove the provider and what its runs left on this node (lock files)."""
        lock_dir = os.path.join(gconfig.load(self.config).run_dir, "lock") if os.path.exists(self.config) else None
        fsid = self.fsid()
        run_quiet(self.agent_argv("stop"))
        run_quiet([GNT_STORAGE, "local-cluster", "down", "--dir", self.root])
        shutil.rmtree(self.ext, ignore_errors=True)
        if lock_dir and fsid and os.path.isdir(lock_dir):
            for name in os.listdir(lock_dir):
                if name.startswith(f"{fsid}."):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(lock_dir, name))

    def fsid(self) -> str | None:
        with contextlib.suppress(OSError), open(self.conf) as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep and key.strip() == "fsid":
                    return value.strip()
        return None

    # -- the two sides ---------------------------------------------------------------

    def action(self, action: str, vol: str, **extra: str) -> float:
        """Run our installed executable as Ganeti would; seconds taken."""
        env = {**clean_env(), "GANETI_CEPH_CONFIG": self.config, "GANETI_CEPH_AGENT_SOCKET": self.socket,
               "VOL_NAME": vol, "EXTP_PROVIDER": "rbd",
               "EXTP_ACCESS": "kernelspace", **extra}
        return time_cmd([os.path.join(self.ext, "rbd", action)], env)

    def rbd_argv(self, *args: str) -> list[str]:
        return ["rbd", "-c", self.conf, "--id", CLIENT, "--keyring", self.keyring, *args]

    def rbd(self, *args: str, timeout: float = 300.0) -> float:
        """Run the rbd CLI as our client; seconds taken (also used, untimed, for set-up)."""
        return time_cmd(self.rbd_argv(*args), timeout=timeout)

    def new_image(self, name: str, mib: int = VOL_MIB) -> None:
        self.rbd("create", "--size", str(mib), f"{POOL}/{name}")

    # -- best-effort clean-up at the end of a bench ------------------------------------

    def images(self) -> set[str]:
        res = subprocess.run(self.rbd_argv("ls", "--format", "json", POOL), env=clean_env(), capture_output=True,
                             text=True, timeout=60, check=False)
        return set(json.loads(res.stdout)) if res.returncode == 0 and res.stdout.strip() else set()

    def drop(self, names: list[str]) -> None:
        """Remove those of `names` that still exist (clones before their parents: list them first)."""
        left = self.images()
        for name in (n for n in names if n in left):
            res = subprocess.run(self.rbd_argv("snap", "ls", "--format", "json", f"{POOL}/{name}"), env=clean_env(),
                                 capture_output=True, text=True, timeout=60, check=False)
            snaps = json.loads(res.stdout) if res.returncode == 0 and res.stdout.strip() else []
            for snap in snaps:
                if snap.get("protected") == "true":
                    run_quiet(self.rbd_argv("snap", "unprotect", f"{POOL}/{name}@{snap['name']}"))
            if snaps:
                run_quiet(self.rbd_argv("snap", "purge", "--no-progress", f"{POOL}/{name}"))
            run_quiet(self.rbd_argv("rm", "--no-progress", f"{POOL}/{name}"))


def cluster(ctx: Ctx) -> Cluster:
    return ctx.shared.get("provider-cluster", Cluster.start)


class Names:
    """Fresh image names for one bench, remembered for the final clean-up."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.made: list[str] = []

    def new(self, side: str) -> str:
        name = f"{self.prefix}-{side}-{len(self.made)}"
        self.made.append(name)
        return name


def vol_uuid() -> str:
    return str(uuid.uuid4())


@bench("create", runs=RUNS)
def create(ctx: Ctx) -> Result:
    """create of an empty 1 GiB volume vs `rbd create`; each run a fresh name, removed (untimed) after."""
    c, names = cluster(ctx), Names("create")

    def ours() -> float:
        vol = names.new("ours")
        took = c.action("create", vol, VOL_SIZE=str(VOL_MIB), VOL_UUID=vol_uuid())
        c.rbd("rm", "--no-progress", f"{POOL}/{vol}")
        return took

    def base() -> float:
        vol = names.new("rbd")
        took = c.rbd("create", "--size", str(VOL_MIB), f"{POOL}/{vol}")
        c.rbd("rm", "--no-progress", f"{POOL}/{vol}")
        return took

    try:
        return compare("create", "rbd create", ctx.runs, ours, base)
    finally:
        c.drop(names.made)


@bench("grow", runs=RUNS)
def grow(ctx: Ctx) -> Result:
    """grow by 1 GiB vs `rbd resize --size`: one image per side, each run a size larger."""
    c = cluster(ctx)
    vols = {"ours": "grow-ours", "rbd": "grow-rbd"}
    sizes = dict.fromkeys(vols, VOL_MIB)

    def ours() -> float:
        old, new = sizes["ours"], sizes["ours"] + 1024
        took = c.action("grow", vols["ours"], VOL_SIZE=str(old), VOL_NEW_SIZE=str(new))
        sizes["ours"] = new
        return took

    def base() -> float:
        new = sizes["rbd"] + 1024
        took = c.rbd("resize", "--no-progress", "--size", str(new), f"{POOL}/{vols['rbd']}")
        sizes["rbd"] = new
        return took

    try:
        for vol in vols.values():
            c.new_image(vol)
        return compare("grow", "rbd resize", ctx.runs, ours, base)
    finally:
        c.drop(list(vols.values()))


@bench("snapshot", runs=RUNS)
def snapshot(ctx: Ctx) -> Result:
    """snapshot (VOL_SNAPSHOT_NAME=<vol>.snap) vs `rbd snap create`; untimed after each run: our remove
    of the .snap volume, `rbd snap rm` for the baseline."""
    c = cluster(ctx)
    vol, base_vol = "snapshot-ours", "snapshot-rbd"

    def ours() -> float:
        took = c.action("snapshot", vol, VOL_SNAPSHOT_NAME=f"{vol}.snap", VOL_SNAPSHOT_SIZE=str(VOL_MIB))
        c.action("remove", f"{vol}.snap")
        return took

    def base() -> float:
        took = c.rbd("snap", "create", "--no-progress", f"{POOL}/{base_vol}@bench")
        c.rbd("snap", "rm", "--no-progress", f"{POOL}/{base_vol}@bench")
        return took

    try:
        c.new_image(vol)
        c.new_image(base_vol)
        return compare("snapshot", "rbd snap create", ctx.runs, ours, base)
    finally:
        c.drop([f"{vol}.snap", vol, base_vol])


@bench("remove", runs=RUNS)
def remove(ctx: Ctx) -> Result:
    """remove vs `rbd rm` of a freshly created (untimed), empty 1 GiB image."""
    c, names = cluster(ctx), Names("remove")

    def ours() -> float:
        vol = names.new("ours")
        c.new_image(vol)
        return c.action("remove", vol, VOL_UUID=vol_uuid())

    def base() -> float:
        vol = names.new("rbd")
        c.new_image(vol)
        return c.rbd("rm", "--no-progress", f"{POOL}/{vol}")

    try:
        return compare("remove", "rbd rm", ctx.runs, ours, base)
    finally:
        c.drop(names.made)


@bench("attach-userspace", runs=RUNS)
def attach_userspace(ctx: Ctx) -> Result:
    """attach with EXTP_ACCESS=userspace (no device, just the URI) vs `rbd info` of the same image."""
    c, vol = cluster(ctx), "attach"
    try:
        c.new_image(vol)
        return compare("attach-userspace", "rbd info", ctx.runs,
                       lambda: c.action("attach", vol, EXTP_ACCESS="userspace", VOL_UUID=vol_uuid()),
                       lambda: c.rbd("info", f"{POOL}/{vol}"))
    finally:
        c.drop([vol])


@bench("clone-create", runs=RUNS)
def clone_create(ctx: Ctx) -> Result:
    """create with EXTP_ORIGIN=<template>@<snap> (copy-on-write) vs `rbd cp` of that snapshot (a full copy).

    The template: 10 GiB with 1 GiB written, snapshotted once up front. Each
    run's clone or copy is removed (untimed) after it.
    """
    c, names = cluster(ctx), Names("clone")
    template, snap = "clone-template", "golden"
    origin = f"{POOL}/{template}@{snap}"

    def ours() -> float:
        vol = names.new("ours")
        took = c.action("create", vol, VOL_SIZE=str(TEMPLATE_MIB), VOL_UUID=vol_uuid(), EXTP_ORIGIN=origin)
        c.rbd("rm", "--no-progress", f"{POOL}/{vol}")
        return took

    def base() -> float:
        copy = names.new("rbd")
        took = c.rbd("cp", "--no-progress", origin, f"{POOL}/{copy}")
        c.rbd("rm", "--no-progress", f"{POOL}/{copy}")
        return took

    try:
        c.new_image(template, TEMPLATE_MIB)
        c.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-total", TEMPLATE_DATA, "--io-pattern", "seq",
              f"{POOL}/{template}")
        c.rbd("snap", "create", "--no-progress", origin)
        return compare("clone-create", "rbd cp", ctx.runs, ours, base, base_runs=CLONE_BASE_RUNS)
    finally:
        c.drop([*names.made, template])
