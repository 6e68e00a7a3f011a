"""A client of ours killed mid-call lets go at the next call; a live one is never touched.

Before ganeti_ceph/rbd/clients.py, a provider process or agent worker
SIGKILLed with a volume open left its watch for Ceph's 30 s watch timeout
and its exclusive lock until broken: Ganeti's follow-up remove was refused
"in use" (seen in the fault suite's agent-killed scenario). Here the holder
is a real process that records itself the way every call does
(clients.recorded), opens the volume and takes its lock, then is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import rbd

from ganeti_ceph import config
from ganeti_ceph.rbd import clients
from ganeti_ceph.session import Session
from tests.ceph.provider_env import Provider, provider_fixture
from tests.conftest import REPO, LocalCluster

HOLDER = """
import sys, time, rbd
from ganeti_ceph import config
from ganeti_ceph.rbd import clients, fencing
from ganeti_ceph.session import Session
cfg = config.load(sys.argv[1])
with Session(cfg) as s, clients.recorded(cfg.run_dir, s, s.fsid(), cfg.pool, sys.argv[2]), \\
        s.ioctx(cfg.pool) as io, rbd.Image(io, sys.argv[2]) as img:
    img.write(b"x", 0)  # takes the exclusive lock
    with open(sys.argv[3] + ".tmp", "w") as fh:
        fh.write(fencing.plain_addr(s.rados.get_addrs()))
    import os; os.rename(sys.argv[3] + ".tmp", sys.argv[3])
    time.sleep(600)
"""


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("dead-clients")), request=request)


def hold(prov: Provider, vol: str, tmp: str) -> tuple[subprocess.Popen, str]:
    """A process of ours holding `vol` open and locked; (it, its client address)."""
    ready = os.path.join(tmp, f"{vol}.addr")
    os.makedirs(config.load(prov.a).run_dir, exist_ok=True)  # as the agent (its socket's dir) or a first map
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, prov.a, vol, ready], cwd=REPO,
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not os.path.exists(ready):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the holder did not get {vol} within 30 s: {proc.communicate(timeout=10)[1]!r}")
        time.sleep(0.05)
    with open(ready) as fh:
        return proc, fh.read()


def held_by(prov: Provider, vol: str) -> tuple[list[str], list[str]]:
    """(watcher addresses, exclusive lock owners) of `vol`; a read-only look adds no watcher of its own,
    owners are listed only on a writable handle."""
    with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
        with rbd.Image(io, vol, read_only=True) as img:
            watchers = [w["addr"] for w in img.watchers_list()]
        with rbd.Image(io, vol) as img:
            return watchers, [o["owner"] for o in img.lock_get_owners()]


def blocklist(prov: Provider) -> set[str]:
    with Session(prov.cluster.admin) as s:
        return {e["addr"] for e in s.mon_command("osd blocklist ls") or []}


def unblock(prov: Provider, addr: str) -> None:
    with Session(prov.cluster.admin) as s:
        if addr in blocklist(prov):
            s.mon_command("osd blocklist", blocklistop="rm", addr=addr)


def test_a_killed_client_lets_go_at_the_next_call(prov: Provider, tmp_path: str) -> None:
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="16").ok()
    proc, addr = hold(prov, vol, str(tmp_path))
    try:
        watchers, owners = held_by(prov, vol)
        assert addr in watchers and owners == [addr], (addr, watchers, owners)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # Ganeti's follow-ups after a failed call: no wait for Ceph's 30 s watch timeout.
        prov.run("setinfo", vol, VOL_METADATA="after the kill").ok()
        assert held_by(prov, vol) == ([], []), "the dead client's watch or lock is still there"
        assert addr in blocklist(prov) and "127.0.0.1:0/0" not in blocklist(prov), "not exactly that address"
        assert not os.listdir(os.path.join(config.load(prov.a).run_dir, clients.DIR)), "its record stayed"
        res = prov.run("remove", vol).ok()
        assert "removed" in res.stderr, res.stderr
    finally:
        proc.kill()
        proc.wait(10)
        unblock(prov, addr)


def test_a_live_client_is_left_alone(prov: Provider, tmp_path: str) -> None:
    """Its record is there, its process lives: the remove is refused "in use" and nobody is blocklisted."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="16").ok()
    proc, addr = hold(prov, vol, str(tmp_path))
    try:
        res = prov.run("remove", vol)
        assert res.rc != 0 and "in use" in res.stderr, res
        assert addr not in blocklist(prov)
        assert addr in held_by(prov, vol)[0]
    finally:
        proc.kill()
        proc.wait(10)
    prov.run("remove", vol).ok()  # now dead: released at once
    unblock(prov, addr)
