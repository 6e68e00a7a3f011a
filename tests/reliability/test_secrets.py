"""Secrets (doc/reliability.md): no key material in argv, children's environments, logs, reports,
/metrics or world-readable files.

The session-wide watch (tests/reliability/secrets_watch.py) samples every process during the
whole reliability session and scans the logs and files at its end (the `secrets` row). These
tests prove that the watch sees what it must (a planted key is found in argv, environment and a
world-readable file; a private file is not flagged), and hand it what only a test can make:
the collector's reports and /metrics, and the provider's children while a volume is mapped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ganeti_ceph import procs
from ganeti_ceph.rbd.mappers.fuse_loop import MOUNT_TREE
from tests.ceph.provider_env import Provider, provider_fixture
from tests.conftest import BIN, LocalCluster
from tests.reliability.secrets_watch import ROOT, WATCH, Watch, keyring_keys

MOND_PORT = 14470  # this helper's share of the collector test ports


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    base = tempfile.mkdtemp(prefix="secrets-", dir=ROOT)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def found_in(where_prefix: str, watch: Watch = WATCH) -> list[str]:
    return [f for f in watch.leaks() if f.startswith(where_prefix)]


def test_the_watch_finds_a_planted_key(scratch: str) -> None:
    """A fake key in a process's argv, in its environment and in a world-readable file is found;
    the same in a file only root may read is not a leak."""
    fake_argv, fake_env = "QVFBcGxhbnRlZEZha2VLZXlBcmd2MDAwMDAwMDA9PQ==", "QVFBcGxhbnRlZEZha2VLZXlFbnYwMDAwMDAwMDA9PQ=="
    watch = Watch(keys={fake_argv, fake_env})
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", fake_argv],
                             env={"PATH": "/usr/bin:/bin", "CEPH_ARGS": fake_env})
    try:
        deadline = time.monotonic() + 10
        while fake_argv not in procs.cmdline(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        watch.sample()
    finally:
        child.kill()
        child.wait()
    assert found_in(f"argv of pid {child.pid}", watch)
    assert found_in(f"environment of pid {child.pid}", watch)
    os.chmod(scratch, 0o755)
    shown, private = os.path.join(scratch, "shown.txt"), os.path.join(scratch, "private.txt")
    for path, mode in ((shown, 0o644), (private, 0o600)):
        with open(path, "w") as fh:
            fh.write(f"key = {fake_argv}\n")
        os.chmod(path, mode)
    watch.files(roots=[scratch], logs=[])
    try:
        assert found_in(f"world-readable {shown}", watch) and not found_in(f"world-readable {private}", watch)
    finally:
        os.unlink(shown)
        os.unlink(private)


def test_the_watch_never_looks_under_the_mappers_mounts(tmp_path: Path) -> None:
    """<run_dir>/fuse is passed over by name, mounted or not: the watch read /proc/mounts once per
    walk and could walk into an rbd-fuse mounted meanwhile, racing a map's lookup (doc/reliability.md).
    Private files outside the watched dirs: the session's watch must not take these keys."""
    fuse = tmp_path / "run-x" / MOUNT_TREE / "fsid" / "rbd" / "vol"
    fuse.mkdir(parents=True)
    fake = "QVFBbWFwcGVyTW91bnRGYWtlS2V5MDAwMDAwMDA9PQ=="
    for i, d in enumerate((fuse, tmp_path)):
        keyring = d / "ceph.client.x.keyring"
        keyring.touch(mode=0o600)
        keyring.write_text(f"key = {fake}{i}\n")
    assert keyring_keys(str(tmp_path)) == {f"{fake}1"}


def test_the_watch_knows_the_clusters_keys(local_cluster: LocalCluster) -> None:
    WATCH.refresh_keys()
    for keyring in (local_cluster.client.keyring, local_cluster.admin.keyring):
        with open(keyring) as fh:
            keys = {v.strip() for k, _, v in (line.partition("=") for line in fh) if k.strip() == "key"}
        assert keys and keys <= WATCH.keys, keyring
    assert WATCH.samples > 0, "the session's watch is not sampling"


def test_reports_and_metrics_hold_no_key(local_cluster: LocalCluster, scratch: str) -> None:
    """The one-shot collector (report and --metrics) and the daemon's every endpoint."""
    yaml = os.path.join(local_cluster.dir, "ganeti-ceph.yaml")
    collector = os.path.join(BIN, "ganeti-ceph-collector")
    for extra in ([], ["--metrics"], ["--raw"]):
        res = subprocess.run([collector, "--config", yaml, *extra], capture_output=True, text=True, timeout=60,
                             check=True)
        WATCH.report(f"ganeti-ceph-collector {' '.join(extra)}", res.stdout + res.stderr)
    mond = [os.path.join(BIN, "ganeti-ceph-mond"), "--bind", "127.0.0.1", "--port", str(MOND_PORT),
            "--config", yaml, "--interval", "1", "--pidfile", os.path.join(scratch, "mond.pid"),
            "--log", os.path.join(scratch, "mond.log")]
    subprocess.run([mond[0], "start", *mond[1:]], check=True, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{MOND_PORT}/1/report/all", timeout=10) as res:
                report = res.read().decode()
            if json.loads(report)[0]["data"]["status"]["code"] != 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        WATCH.report("mond /1/report/all", report)
        for path in ("/metrics", "/", "/1/list/collectors", "/1/report/storage/ceph"):
            with urllib.request.urlopen(f"http://127.0.0.1:{MOND_PORT}{path}", timeout=10) as res:
                WATCH.report(f"mond {path}", res.read().decode())
    finally:
        subprocess.run([mond[0], "stop", *mond[1:]], check=True, timeout=30)
    WATCH.files(roots=[scratch], logs=[])  # its log
    assert json.loads(report)[0]["data"]["status"]["code"] != 2, "the daemon never reached the cluster"
    assert not found_in("ganeti-ceph-collector") and not found_in("mond") and not found_in("log")


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, scratch: str) -> Iterator[Provider]:
    base = os.path.join(scratch, "provider")
    os.makedirs(base)
    yield from provider_fixture(local_cluster, base, agent=True)


def test_provider_children_hold_no_key(prov: Provider) -> None:
    """While a volume is mapped (the mapper's processes running) and through the agent: the argv and
    environment of every process of the provider's run dir, and of the agent, hold no key."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    try:
        prov.attach(vol)
        pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        mine = [pid for pid in pids if any(prov.base in arg for arg in procs.cmdline(pid))]
        assert mine, "no process of the provider's run dir or agent was found while mapped"
        for pid in mine:
            for name in ("cmdline", "environ"):
                with open(f"/proc/{pid}/{name}", "rb") as fh:
                    WATCH.report(f"{name} of provider process {pid} ({' '.join(procs.cmdline(pid))[:80]})",
                                 fh.read().decode(errors="replace"))
        prov.run("detach", vol).ok()
    finally:
        prov.run("remove", vol).ok()
    assert not found_in("cmdline of provider") and not found_in("environ of provider")


def test_nothing_found_so_far(local_cluster: LocalCluster) -> None:
    """Last of the suite (files sort last), while the session's cluster still runs: its logs and
    every world-readable file under the test dirs, and everything the watch kept up to here
    (the end of the session repeats it for what comes after)."""
    WATCH.files()
    leaks = WATCH.leaks()
    assert leaks == [], "\n".join(leaks)
