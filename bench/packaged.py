"""The provider as the Debian package installs it, versus the `rbd` CLI, both in one Debian chroot.

The .deb is built from this tree by `make deb`'s code (testbed/deb.py: cached
under build/deb/test-<hash>/, shared with the package tests) and installed by dpkg into an overlay over the
cached bookworm chroot of the package tests (tests/packaging/chroot.py: its
helpers, its cache). The chroot shares this host's network, so both sides
reach the shared local cluster of bench/provider.py; the cluster's ceph.conf
and client keyring are copied to /etc/ceph/ in the chroot and
/etc/ganeti/ceph.yaml names them (no systemd runs here).

- packaged-create, packaged-attach: /usr/share/ganeti/extstorage/rbd/<action>
  with Ganeti's environment, the agent running as its unit starts it (the
  unit's ExecStart, run in the chroot); vs `rbd create`, `rbd info`.
- no-agent-create: the same create with no agent running (the provider then
  does the call itself) vs `rbd create`.
Every side is `chroot ROOT ...`, so the chroot's cost is on both.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import time

from harness import SCRATCH, BenchError, Ctx, Result, Shared, bench, compare, time_cmd
from provider import CLIENT, POOL, RUNS, VOL_MIB, Cluster, Names, vol_uuid

from ganeti_ceph import config as gconfig
from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError
from testbed import deb as deb_build
from tests.packaging import chroot
from tests.packaging.test_deb import PROVIDER, TEST_EXTRAS, field

UNIT = "/lib/systemd/system/ganeti-ceph-agent.service"
SOCKET = "/run/ganeti-ceph/agent.sock"
CONF, KEYRING = "/etc/ceph/ceph.conf", f"/etc/ceph/ceph.client.{CLIENT}.keyring"


class Packaged:
    """The chroot with the package installed and configured for the shared cluster, and its agent."""

    def __init__(self, c: Cluster, root: str) -> None:
        self.c = c
        self.root = root
        self.agent: subprocess.Popen | None = None

    @classmethod
    def start(cls, shared: Shared) -> Packaged:
        missing = chroot.missing_tools()
        if missing or os.geteuid() != 0:
            raise BenchError(f"needs root and {', '.join(missing) or 'nothing else'}")
        c = shared.get("provider-cluster", Cluster.start)
        try:
            deb = deb_build.built()[0]
        except GanetiCephError as exc:
            raise BenchError(f"building the package: {exc}") from None
        try:
            lower = chroot.with_depends(f"{field(deb, 'Depends')}, {TEST_EXTRAS}")
        except (AssertionError, subprocess.TimeoutExpired) as exc:
            raise BenchError(f"the Debian chroot: {exc}") from None
        work = os.path.join(SCRATCH, "packaged")
        shutil.rmtree(work, ignore_errors=True)
        stack = contextlib.ExitStack()
        shared.on_close(lambda: shutil.rmtree(work, ignore_errors=True))
        shared.on_close(stack.close)
        p = cls(c, stack.enter_context(chroot.overlay(lower, work)))
        stack.callback(p.stop_agent)
        shutil.copy(deb, os.path.join(p.root, "tmp"))
        chroot.run(p.root, "dpkg", "-i", "/tmp/" + os.path.basename(deb))
        p.configure()
        return p

    def configure(self) -> None:
        """conf, keyring and /etc/ganeti/ceph.yaml in the chroot: the shared cluster, as client.ganeti."""
        for src, dst in ((self.c.conf, CONF), (self.c.keyring, KEYRING)):
            os.makedirs(os.path.dirname(self.root + dst), exist_ok=True)
            shutil.copy(src, self.root + dst)
        cfg = dataclasses.replace(gconfig.load(self.c.config), conf=CONF, keyring=KEYRING,
                                  run_dir="/run/ganeti-ceph")
        with open(self.root + gconfig.DEFAULT_PATH, "w") as fh:
            fh.write(gconfig.dump(cfg))

    # -- the agent, as its unit starts it ----------------------------------------------------

    def start_agent(self) -> None:
        with open(self.root + UNIT) as fh:
            unit = fh.read()
        exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M)
        if exec_start is None or re.search(r"^Environment", unit, re.M):
            raise BenchError(f"{UNIT}: no ExecStart, or an Environment this bench does not give")
        self.agent = subprocess.Popen(["chroot", self.root, *shlex.split(exec_start.group(1))], env=chroot.ENV,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
        if not (runner.until(time.monotonic() + 30, lambda: os.path.exists(self.root + SOCKET)
                             or self.agent.poll() is not None) and self.agent.poll() is None):
            raise BenchError(f"the agent did not start: {self.agent.stderr.read().decode().strip()[-300:]}")

    def stop_agent(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            self.agent.wait(timeout=60)
        self.agent = None

    # -- the two sides ------------------------------------------------------------------------

    def action(self, action: str, vol: str, **extra: str) -> float:
        """The installed executable, as Ganeti runs it (its environment; no GANETI_CEPH_CONFIG: the default)."""
        env = {**chroot.ENV, "VOL_NAME": vol, "EXTP_PROVIDER": "rbd", "EXTP_ACCESS": "kernelspace", **extra}
        return time_cmd(["chroot", self.root, f"{PROVIDER}/{action}"], env)

    def rbd(self, *args: str) -> float:
        return time_cmd(["chroot", self.root, "rbd", "-c", CONF, "--id", CLIENT, "--keyring", KEYRING, *args],
                        chroot.ENV)


def packaged(ctx: Ctx, agent: bool) -> Packaged:
    p = ctx.shared.get("packaged", Packaged.start)
    if agent and p.agent is None:
        p.start_agent()
    elif not agent:
        p.stop_agent()
    return p


def create_vs_rbd(name: str, ctx: Ctx, agent: bool) -> Result:
    p, names = packaged(ctx, agent), Names(name)

    def ours() -> float:
        vol = names.new("ours")
        took = p.action("create", vol, VOL_SIZE=str(VOL_MIB), VOL_UUID=vol_uuid())
        p.c.rbd("rm", "--no-progress", f"{POOL}/{vol}")
        return took

    def base() -> float:
        vol = names.new("rbd")
        took = p.rbd("create", "--size", str(VOL_MIB), f"{POOL}/{vol}")
        p.c.rbd("rm", "--no-progress", f"{POOL}/{vol}")
        return took

    try:
        return compare(name, "rbd create", ctx.runs, ours, base)
    finally:
        p.c.drop(names.made)


@bench("packaged-create", runs=RUNS)
def packaged_create(ctx: Ctx) -> Result:
    """The packaged create of an empty 1 GiB volume, its agent running, vs `rbd create` in the chroot."""
    return create_vs_rbd("packaged-create", ctx, agent=True)


@bench("packaged-attach", runs=RUNS)
def packaged_attach(ctx: Ctx) -> Result:
    """The packaged attach (EXTP_ACCESS=userspace: the URI, no device), its agent running, vs `rbd info`."""
    p, vol = packaged(ctx, agent=True), "packaged-attach"
    try:
        p.c.new_image(vol)
        return compare("packaged-attach", "rbd info", ctx.runs,
                       lambda: p.action("attach", vol, EXTP_ACCESS="userspace", VOL_UUID=vol_uuid()),
                       lambda: p.rbd("info", f"{POOL}/{vol}"))
    finally:
        p.c.drop([vol])


@bench("no-agent-create", runs=RUNS)
def no_agent_create(ctx: Ctx) -> Result:
    """The packaged create with no agent running (the provider connects itself) vs `rbd create`."""
    return create_vs_rbd("no-agent-create", ctx, agent=False)
