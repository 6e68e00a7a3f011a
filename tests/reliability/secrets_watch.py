"""Secrets (doc/reliability.md): the test clusters' cephx keys show up nowhere but in their keyrings.

A `Watch` runs for the whole reliability session (the autouse fixtures at the end, wired in
tests/reliability/conftest.py): a background thread reads the argv of every process on the
machine every SAMPLE_S seconds, and the environment of each new (pid, argv), and keeps the
distinct ones; it also keeps re-reading the keyrings under the test dirs, since clusters come
and go. At the end, and whenever a test asks, everything kept is searched for every key seen,
together with the logs (the test dirs' and /var/log/ganeti/extstorage), the reports a test
handed in (collector output, /metrics) and every world-readable file under the test dirs.
Keys are base64 strings (`key = ...` in a keyring), searched as they are.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from ganeti_ceph.rbd.mappers.fuse_loop import MOUNT_TREE
from tests.conftest import TEST_DIR
from tests.reliability.ledger import Row

ROOT = os.path.dirname(os.path.abspath(TEST_DIR))  # the session's cluster and every bed made beside it
LOGS = ("/var/log/ganeti/extstorage",)
SAMPLE_S = 0.2
KEYS_EVERY = 10  # samples between two reads of the keyrings
MAX_KEPT = 50_000  # distinct argv/environments kept; past it the oldest are checked and dropped
MAX_READ = 64 << 20  # bytes of one log or world-readable file searched


def mount_points() -> set[str]:
    """Never walk into a mount (an rbd-fuse mount of a paused cluster hangs every stat)."""
    with open("/proc/mounts") as fh:
        return {line.split()[1].replace("\\040", " ") for line in fh}


def walk(root: str, only_world: bool = False) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of the regular files under root, not into mounts; with only_world, only
    those any user may read (o+r, in dirs any user may enter). The mapper's mount tree is
    passed over by name: /proc/mounts is read once, and an rbd-fuse mounted during the walk
    must not see this thread's lookups (rbd-fuse's image table is not safe for parallel
    requests: most likely how a map's lookup failed in CI and a watch was left behind,
    doc/reliability.md)."""
    mounts = mount_points()
    for d, dirs, names in os.walk(root):
        keep = []
        for x in dirs:
            path = os.path.join(d, x)
            with contextlib.suppress(OSError):
                if x != MOUNT_TREE and path not in mounts and (
                        not only_world or os.lstat(path).st_mode & stat.S_IXOTH):
                    keep.append(x)
        dirs[:] = keep
        for n in names:
            path = os.path.join(d, n)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode) and (not only_world or st.st_mode & stat.S_IROTH):
                    yield path, st


def keyring_keys(root: str = ROOT) -> set[str]:
    """The `key = ...` values of every keyring under root."""
    keys = set()
    for path, _ in walk(root):
        if "keyring" not in os.path.basename(path):
            continue
        with contextlib.suppress(OSError), open(path, errors="replace") as fh:
            for line in fh:
                name, sep, value = line.partition("=")
                if sep and name.strip() == "key" and len(value.strip()) >= 16:
                    keys.add(value.strip())
    return keys


def upstream_key_argv(pid: str, argv: bytes) -> bool:
    """The one exception, Ceph's and documented (gnt_storage/deploy/volume.py): ceph-volume writes a new
    OSD's keyring with `ceph-authtool ... --add-key <key>`, the key in that child's argv for its few
    milliseconds. Only that exact child of ceph-volume is passed over; its log is redacted by us."""
    args = argv.split(b"\0")
    if not (os.path.basename(args[0]) == b"ceph-authtool" and b"--add-key" in args):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            ppid = fh.read().rsplit(b")", 1)[1].split()[1].decode()
    except (OSError, IndexError):
        return False
    return b"ceph-volume" in read_head(f"/proc/{ppid}/cmdline")


def read_head(path: str) -> bytes:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        return fh.read(MAX_READ)
    return b""


@dataclass
class Watch:
    keys: set[str] = field(default_factory=set)
    # What was seen, by where: "argv of pid N" / "environment of pid N" -> the bytes.
    seen: dict[str, bytes] = field(default_factory=dict)
    reports: dict[str, str] = field(default_factory=dict)
    found: set[str] = field(default_factory=set)  # "<where>: key of ..." once each
    samples: int = 0
    checked: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="secrets-watch", daemon=True)

    # -- the sampler --------------------------------------------------------------------------
    def start(self) -> Watch:
        self.refresh_keys()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()
            if self.samples % KEYS_EVERY == 0:
                self.refresh_keys()

    def refresh_keys(self) -> None:
        new = keyring_keys()
        with self._lock:
            self.keys |= new

    def sample(self) -> None:
        """Every process's argv, and the environment of each argv not seen before for its pid."""
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            argv = read_head(f"/proc/{pid}/cmdline")
            if not argv or upstream_key_argv(pid, argv):
                continue
            shown = argv[:80].replace(b"\0", b" ").decode(errors="replace")
            where = f"argv of pid {pid} ({shown})"
            with self._lock:
                if self.seen.get(where) == argv:
                    continue
                self.seen[where] = argv
            env = read_head(f"/proc/{pid}/environ")
            with self._lock:
                self.seen[f"environment of {where.removeprefix('argv of ')}"] = env
        with self._lock:
            self.samples += 1
            if len(self.seen) > MAX_KEPT:
                self._check_kept()
                self.seen.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    # -- the checks ---------------------------------------------------------------------------
    def _search(self, where: str, blob: bytes | str) -> None:
        data = blob.encode(errors="replace") if isinstance(blob, str) else blob
        self.checked += 1
        for key in self.keys:
            if key.encode() in data:
                self.found.add(f"{where}: holds the key {key[:6]}...")

    def _check_kept(self) -> None:
        for where, blob in self.seen.items():
            self._search(where, blob)

    def report(self, where: str, text: str) -> None:
        """A report (collector output, /metrics) a test made: searched now and at the end."""
        with self._lock:
            self.reports[where] = text
            self._search(where, text)

    def files(self, roots: Iterable[str] = (ROOT,), logs: Iterable[str] = LOGS) -> None:
        """Every world-readable file under roots, and every log file under logs and roots."""
        with self._lock:
            for root in roots:
                for path, _ in walk(root, only_world=True):
                    self._search(f"world-readable {path}", read_head(path))
                for path, _ in walk(root):
                    if path.endswith(".log") or "/log/" in path:
                        self._search(f"log {path}", read_head(path))
            for root in logs:
                if os.path.isdir(root):
                    for path, _ in walk(root):
                        self._search(f"log {path}", read_head(path))

    def leaks(self) -> list[str]:
        """Everything found so far, with all kept argv, environments and reports searched again
        for every key known now (a key may have been read after the process that showed it)."""
        self.refresh_keys()
        with self._lock:
            self._check_kept()
            for where, text in self.reports.items():
                self._search(where, text)
            return sorted(self.found)


WATCH = Watch()


@pytest.fixture(scope="session", autouse=True)
def secrets_watch() -> Iterator[Watch]:
    """Started before anything else of the session (the cluster's bring-up included)."""
    WATCH.start()
    yield WATCH
    WATCH.stop()


@pytest.fixture(scope="session", autouse=True)
def secrets_final(secrets_watch: Watch, ledger: Any) -> Iterator[None]:
    """At the end of the session: what is left of the test dirs and logs (test_secrets.py, last
    of the suite, scans them while the session's cluster still runs), and everything kept,
    against every key seen. It starts no cluster of its own: the Ganeti bed runs without one."""
    yield
    secrets_watch.files()
    leaks = secrets_watch.leaks()
    ledger.record(Row("secrets", runs=secrets_watch.samples, leaks=len(leaks)))  # runs: samples of all processes
    assert not leaks, "key material outside the keyrings:\n" + "\n".join(leaks)
