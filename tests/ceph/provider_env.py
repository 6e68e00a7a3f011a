"""Run the installed `rbd` provider the way ganeti-noded does, from a hostile environment.

Shared by tests/ceph/test_provider*.py. Each module installs the provider in
a temp dir (`Provider`), writes per-node configs (node A: the local cluster's
ganeti-ceph.yaml with its own run_dir; node B: the same plus `node: nodeb`),
runs actions as real processes with noded-like variables on top of an
inherited environment that would break a provider trusting it, and at the end
checks that nothing leaked: mappings, rbd-fuse processes, images, snapshots.
"""

from __future__ import annotations

import contextlib
import glob
import mmap
import os
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import rbd
import yaml

from extstorage.install import install, module_path
from ganeti_ceph import config as gconfig
from ganeti_ceph import procs
from ganeti_ceph.config import Config
from ganeti_ceph.session import Session
from tests.conftest import REPO, LocalCluster

MIB = 1024 * 1024
# Ganeti 3.1's userspace URI pattern, copied here on purpose (not imported from the code under test).
GANETI_31_URI = re.compile(r"^rbd:(\w+)/([a-z0-9-.]+)(:id=[a-z0-9-._]+)?$")
# Tools a provider trusting the inherited PATH would pick up: each fake one logs and exits 99.
FAKE_TOOLS = ("rbd", "rbd-fuse", "rbd-nbd", "losetup", "umount", "mount", "fusermount", "modprobe", "ceph", "python3")
HOSTILE = {
    "CEPH_ARGS": "--id nobody --keyring /nonexistent/keyring",
    "CEPH_CONF": "/nonexistent/ceph.conf",
    "PYTHONPATH": "/nonexistent-evil",
    "PYTHONHOME": "/nonexistent-evil",
    "PYTHONSTARTUP": "/nonexistent-evil/startup.py",
    "LD_LIBRARY_PATH": "/nonexistent-evil",
    "HOME": "/nonexistent",
}
# Variables Ganeti passes per action on top of VOL_NAME and EXTP_* (see the contract doc).
WITH_UUID = ("create", "attach", "detach", "remove")


@dataclass(frozen=True)
class Result:
    """One finished provider process."""

    action: str
    rc: int
    stdout: str
    stderr: str
    elapsed: float

    def ok(self) -> Result:
        assert self.rc == 0, f"rbd {self.action} failed ({self.rc}): {self.stderr}"
        return self

    def one_error(self) -> str:
        """Assert a failure reported as exactly one line `rbd <action>: ...`; return it."""
        lines = self.stderr.strip().splitlines()
        assert self.rc != 0, f"rbd {self.action} unexpectedly succeeded: {self.stdout!r} {self.stderr!r}"
        assert len(lines) == 1, f"expected one stderr line, got: {self.stderr!r}"
        assert lines[0].startswith(f"rbd {self.action}: "), lines[0]
        return lines[0]

    @property
    def note(self) -> str:
        return self.stderr.strip()


class Provider:
    """The provider installed in `base`, plus what the tests made with it."""

    def __init__(self, cluster: LocalCluster, base: str, agent: bool = False) -> None:
        self.cluster = cluster
        self.base = base
        # The executables hand calls to an agent when one answers on this
        # socket; without one (a path nobody listens on) they run in-process.
        self.socket = os.path.join(base, "agent.sock")
        self.agent = [sys.executable, "-m", "extstorage.agent", "--socket", self.socket, "--pidfile",
                      os.path.join(base, "agent.pid"), "--log", os.path.join(base, "agent.log")]
        self.pidfile = os.path.join(base, "agent.pid")
        if agent:
            self.start_agent()
        self.dir = install(os.path.join(base, "extstorage"), sys.executable, log_dir=os.path.join(base, "log"))
        # Both variants run the tree under test, not some installed copy: the
        # executables put this root first on sys.path, the agent says where
        # its code came from (its workers run the same).
        assert module_path()[0] == REPO, f"the provider would run {module_path()[0]}, not the tree {REPO}"
        self.fake_bin = os.path.join(base, "fake-bin")
        self.fake_calls = os.path.join(base, "fake-tool-calls")
        os.makedirs(self.fake_bin)
        for tool in FAKE_TOOLS:
            path = os.path.join(self.fake_bin, tool)
            with open(path, "w") as fh:
                fh.write(f'#!/bin/sh\necho "$0 $*" >> {self.fake_calls}\nexit 99\n')
            os.chmod(path, 0o755)
        self.volumes: list[str] = []  # every image a test made or meant to make
        self.uuids: dict[str, str] = {}
        self.run_dirs: set[str] = set()
        self.results: list[Result] = []
        self.a = self.config("node-a")
        self.b = self.config("node-b", node="nodeb")

    # -- the agent ---------------------------------------------------------------
    def start_agent(self) -> None:
        """`ganeti-ceph-agent start` from the tree under test; checked to run that tree's code."""
        subprocess.run([*self.agent[:3], "start", *self.agent[3:]], check=True, timeout=30, cwd=REPO)
        pid = self.agent_pid()
        with open(self.agent[-1]) as fh:
            banner = f"(pid {pid}, code from {REPO})"
            assert banner in fh.read(), f"the agent does not run the tree under test: no {banner!r} in its log"

    def agent_pid(self) -> int | None:
        return procs.pid_from_file(self.pidfile, "extstorage.agent")

    # -- configs and names ------------------------------------------------------
    def config(self, name: str, **changes: Any) -> str:
        """A copy of the cluster's ganeti-ceph.yaml with its own run_dir and `changes`."""
        with open(os.path.join(self.cluster.dir, "ganeti-ceph.yaml")) as fh:
            data = yaml.safe_load(fh)
        path = os.path.join(self.base, f"{name}.yaml")
        cfg = gconfig.parse({**data, "run_dir": os.path.join(self.base, f"run-{name}"), **changes}, path)
        self.run_dirs.add(cfg.run_dir)
        with open(path, "w") as fh:
            fh.write(gconfig.dump(cfg))
        return path

    def volume(self, n: int = 0) -> str:
        """A fresh Ganeti volume name `<uuid>.ext.disk<n>`, remembered for the leak check."""
        name = f"{uuid.uuid4()}.ext.disk{n}"
        self.track(name)
        self.uuids[name] = str(uuid.uuid4())
        return name

    def track(self, name: str) -> str:
        self.volumes.append(name)
        return name

    # -- running actions --------------------------------------------------------
    def env(self, action: str, vol: str, config: str | None, extra: dict[str, str | None]) -> dict[str, str]:
        env = {**HOSTILE, "PATH": f"{self.fake_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "LC_ALL": "C", "GANETI_CEPH_CONFIG": config or self.a, "VOL_NAME": vol,
               "GANETI_CEPH_AGENT_SOCKET": self.socket,
               "EXTP_PROVIDER": "rbd", "EXTP_ACCESS": "kernelspace"}
        if action in WITH_UUID and vol in self.uuids:
            env["VOL_UUID"] = self.uuids[vol]
        env.update(extra)  # type: ignore[arg-type]
        return {k: v for k, v in env.items() if v is not None}

    def run(self, action: str, vol: str, config: str | None = None, timeout: float = 90,
            **extra: str | None) -> Result:
        """Run `<provider>/<action>` as noded does: no args, cwd the provider dir."""
        started = time.monotonic()
        res = subprocess.run([os.path.join(self.dir, action)], cwd=self.dir, env=self.env(action, vol, config, extra),
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        out = Result(action, res.returncode, res.stdout, res.stderr, time.monotonic() - started)
        self.results.append(out)
        return out

    def attach(self, vol: str, config: str | None = None, **extra: str | None) -> tuple[str, str]:
        """attach, checked to succeed; (line 1, line 2) of its output."""
        res = self.run("attach", vol, config, **extra).ok()
        lines = res.stdout.split("\n")
        assert len(lines) == 3 and lines[2] == "", f"attach printed {res.stdout!r}"
        return lines[0], lines[1]

    # -- looking at Ceph as the client ------------------------------------------
    @contextlib.contextmanager
    def image(self, vol: str, read_only: bool = True, snap: str | None = None) -> Iterator[rbd.Image]:
        with Session(self.cluster.client) as s, s.ioctx() as io, rbd.Image(io, vol, read_only=read_only,
                                                                          snapshot=snap) as img:
            yield img

    def exists(self, vol: str) -> bool:
        with Session(self.cluster.client) as s, s.ioctx() as io:
            return vol in rbd.RBD().list(io)

    def write(self, vol: str, data: bytes, offset: int = 0) -> None:
        with self.image(vol, read_only=False) as img:
            img.write(data, offset)
            img.flush()

    def read(self, vol: str, offset: int, length: int, snap: str | None = None) -> bytes:
        with self.image(vol, snap=snap) as img:
            return img.read(offset, length)

    def metadata(self, vol: str) -> dict[str, str]:
        with self.image(vol) as img:
            return dict(img.metadata_list())

    def size_mib(self, vol: str) -> int:
        with self.image(vol) as img:
            return img.size() // MIB

    # -- leak check and forced cleanup ---------------------------------------------
    def leaks(self, allow: tuple[str, ...] = ()) -> list[str]:
        """Everything this module's tests left behind (but the images in `allow`)."""
        found = []
        for run_dir in sorted(self.run_dirs):
            for path in glob.glob("/sys/block/loop*/loop/backing_file"):
                with contextlib.suppress(OSError), open(path) as fh:
                    if fh.read().strip().startswith(run_dir + "/"):
                        found.append(f"loop device {path.split('/')[3]} backed under {run_dir}")
            found += [f"mount {m}" for m in mounts_under(run_dir)]
            found += [f"process {pid}: {' '.join(procs.cmdline(pid))}" for pid in procs.find(substring=run_dir)]
        with Session(self.cluster.admin) as s, s.ioctx(self.cluster.client.pool) as io:
            present = set(rbd.RBD().list(io))
            for name in sorted(set(self.volumes) & present - set(allow)):
                with rbd.Image(io, name, read_only=True) as img:
                    snaps = [x["name"] for x in img.list_snaps()]
                    watch = [w["addr"] for w in img.watchers_list()]
                found.append(f"image {name} (snapshots {snaps}, watchers {watch})")
            found += [f"trash entry {e['name']}" for e in rbd.RBD().trash_list(io) if e["name"] in self.volumes]
        if os.path.exists(self.fake_calls):
            with open(self.fake_calls) as fh:
                found.append(f"the provider ran tools from the inherited PATH: {fh.read()!r}")
        return found

    def cleanup(self) -> None:
        """Forcibly remove whatever leaked, so one failure does not spoil the session."""
        subprocess.run([*self.agent[:3], "stop", *self.agent[3:]], check=True, timeout=30)
        for run_dir in sorted(self.run_dirs):
            for path in glob.glob("/sys/block/loop*/loop/backing_file"):
                with contextlib.suppress(OSError), open(path) as fh:
                    if fh.read().strip().startswith(run_dir + "/"):
                        subprocess.run(["losetup", "-d", f"/dev/{path.split('/')[3]}"], check=False)
            for mnt in mounts_under(run_dir):
                subprocess.run(["umount", "-l", mnt], check=False)
            deadline = time.monotonic() + 5
            while procs.find(substring=run_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in procs.find(substring=run_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with Session(self.cluster.admin) as s, s.ioctx(self.cluster.client.pool) as io:
            for _ in range(6):  # children before parents: retry until nothing is left
                left = set(self.volumes) & set(rbd.RBD().list(io))
                for name in sorted(left):
                    with contextlib.suppress(rbd.Error):
                        with rbd.Image(io, name) as img:
                            for snap in img.list_snaps():
                                if img.is_protected_snap(snap["name"]):
                                    img.unprotect_snap(snap["name"])
                                img.remove_snap(snap["name"])
                        rbd.RBD().remove(io, name)
            for entry in rbd.RBD().trash_list(io):
                if entry["name"] in self.volumes:
                    with contextlib.suppress(rbd.Error):
                        rbd.RBD().trash_remove(io, entry["id"], True)


def mounts_under(run_dir: str) -> list[str]:
    with open("/proc/mounts") as fh:
        return [line.split()[1] for line in fh if line.split()[1].startswith(run_dir + "/")]


def provider_fixture(cluster: LocalCluster, base: str, agent: bool = False,
                     request: pytest.FixtureRequest | None = None) -> Iterator[Provider]:
    """Body of each module's provider fixture: install, yield, clean up, then fail on any leak.

    Given the fixture's `request`, leaks after failed tests of the module are
    a warning (those tests' leftovers, cleaned up), not a teardown error: with
    -x that error ended the run in a traceback hiding the failure itself."""
    prov = Provider(cluster, base, agent)
    failed_before = request.session.testsfailed if request else 0
    yield prov
    leaked = prov.leaks()
    prov.cleanup()
    key = client_key(cluster.client)
    shown = [r.action for r in prov.results if key in r.stdout or key in r.stderr]
    assert not shown, f"the client key appeared in the output of: {shown}"
    if not leaked:
        return
    text = "provider tests leaked:\n" + "\n".join(leaked)
    failed = request.session.testsfailed - failed_before if request else 0
    if failed:
        warnings.warn(f"{text}\n(after {failed} failed test(s) here: see those first; cleaned up)", stacklevel=1)
    else:
        pytest.fail(text, pytrace=False)


def client_key(cfg: Config) -> str:
    with open(cfg.keyring) as fh:
        for line in fh:
            name, sep, value = line.partition("=")
            if sep and name.strip() == "key":
                return value.strip()
    raise AssertionError(f"no key in {cfg.keyring}")


def loop_minor(dev: str) -> int:
    return os.minor(os.stat(dev).st_rdev)


def device_bytes(dev: str) -> int:
    with open(f"/sys/block/{os.path.basename(dev)}/size") as fh:
        return int(fh.read()) * 512


def write_device(dev: str, data: bytes, offset: int) -> None:
    fd = os.open(dev, os.O_RDWR)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_device(dev: str, offset: int, length: int) -> bytes:
    """Read with O_DIRECT (page-aligned buffer): what the device holds, not the page cache."""
    buf = mmap.mmap(-1, length)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        n = os.preadv(fd, [buf], offset)
    finally:
        os.close(fd)
    return bytes(buf[:n])
