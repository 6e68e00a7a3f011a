"""The node agent under faults, on the real cluster with the real executables.

A call that outlives timeouts.action is stopped, not just answered: once
Ganeti has seen the failure, nothing of the call happens any more, and the
image's mapping lock is free. An agent killed mid-call is a failure in one
line, never a second run of the call in-process. Hostile bytes on the socket
run nothing and do not stop the agent.

To make a call hang on purpose, the test holds the image's mapping lock
itself (the lock file any map/unmap of that image takes first), so the call
waits past its bound; the lock is let go afterwards to see whether the call
still does anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from extstorage.client import GRACE_S, HANDSHAKE_S, MAX_FRAME, frame
from ganeti_ceph import procs
from ganeti_ceph.config import conf_fsid
from ganeti_ceph.rbd.mappers import Target, table
from tests.ceph.provider_env import Provider, provider_fixture
from tests.conftest import LocalCluster

ACTION_S = 3  # timeouts.action of the config these tests use
SETTLE_S = 3  # how long a stopped call gets to show it is not stopped


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("agent-faults")), agent=True,
                                request=request)


@pytest.fixture(scope="module")
def short(prov: Provider) -> str:
    """A config whose calls are stopped after ACTION_S s, while a lock wait may last 30 s."""
    return prov.config("short", timeouts={"connect": 10, "mon_op": 10, "osd_op": 30, "action": ACTION_S})


@pytest.fixture(scope="module")
def roomy(prov: Provider, short: str) -> str:
    """The same node (run_dir, locks, links) with the default bounds: a real map may take over ACTION_S s."""
    return prov.config("roomy", run_dir=os.path.join(prov.base, "run-short"))


def target(prov: Provider, vol: str) -> Target:
    return Target(conf_fsid(prov.cluster.conf), "rbd", vol)


@contextlib.contextmanager
def holding_map_lock(prov: Provider, vol: str) -> Iterator[None]:
    """Hold the mapping lock of `vol` for the `short` config's node, as a call under way would."""
    path = table.flat_path(os.path.join(prov.base, "run-short"), "lock", target(prov, vol))
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def mapped(prov: Provider, vol: str) -> list[str]:
    """Traces of a mapping of `vol` on the short config's node: rbd-fuse, its link."""
    found = [f"rbd-fuse {pid}" for pid in procs.find("rbd-fuse", arg=vol)]
    link = table.link(os.path.join(prov.base, "run-short"), target(prov, vol))
    return found + ([f"link {link}"] if os.path.lexists(link) else [])


def children(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as fh:
            if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def settle_and_check_unmapped(prov: Provider, vol: str) -> None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        assert not mapped(prov, vol), f"a stopped call went on after its failure was reported: {mapped(prov, vol)}"
        time.sleep(0.1)


@pytest.mark.parametrize("via", ["agent", "in-process"])
def test_a_timed_out_call_is_stopped(prov: Provider, short: str, roomy: str, via: str) -> None:
    """An attach stuck past timeouts.action fails in one line within its bound; after that, with the
    lock let go, it does not map after all, and the image's lock is free for the next call."""
    vol = prov.volume()
    prov.run("create", vol, short, VOL_SIZE="64").ok()
    socket_env = {} if via == "agent" else {"GANETI_CEPH_AGENT_SOCKET": os.path.join(prov.base, "nobody.sock")}
    with holding_map_lock(prov, vol):
        res = prov.run("attach", vol, short, **socket_env)
        line = res.one_error()
    assert f"did not finish within {ACTION_S} s" in line, line
    assert res.elapsed < ACTION_S + GRACE_S  # ended within its configured bound (and the agent's grace)
    settle_and_check_unmapped(prov, vol)
    prov.attach(vol, roomy, **socket_env)  # the lock is free: the next call maps at once
    prov.run("detach", vol, roomy, **socket_env).ok()
    prov.run("remove", vol, roomy).ok()


def test_agent_killed_mid_call_is_a_failure_not_a_rerun(prov: Provider, short: str) -> None:
    """The agent is SIGKILLed while a call waits: the executable fails at once in one line (before the
    fix it ran the call again in-process), and the agent's worker, which waited for the lock, gives the call up
    when it gets the lock and ends, so nothing maps."""
    vol = prov.volume()
    prov.run("create", vol, short, VOL_SIZE="64").ok()
    try:
        with holding_map_lock(prov, vol):
            call = subprocess.Popen([os.path.join(prov.dir, "attach")], cwd=prov.dir,
                                    env=prov.env("attach", vol, short, {}), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
            time.sleep(1)  # the call is in a worker, waiting for the lock
            agent = prov.agent_pid()
            assert agent
            workers = children(agent)
            os.kill(agent, signal.SIGKILL)
            try:
                out, err = call.communicate(timeout=ACTION_S + 2)
            except subprocess.TimeoutExpired:
                call.kill()
                out, err = call.communicate()
                pytest.fail(f"the executable did not end with its agent: {err!r}")
        lines = err.strip().splitlines()
        assert call.returncode == 4 and len(lines) == 1, (call.returncode, out, err)
        assert lines[0].startswith("rbd attach: the ganeti-ceph agent took the call but gave no answer"), lines
        assert out == ""
        settle_and_check_unmapped(prov, vol)
        assert workers, "the agent runs calls in worker processes"
        assert not [p for p in workers if procs.alive(p)], "workers outlived their agent"
    finally:
        prov.start_agent()
    prov.run("remove", vol, short).ok()


def raw_exchange(prov: Provider, data: bytes, wait: float) -> bytes:
    """Send `data` to the agent as a client would, return all it answers before closing."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(wait)
        sock.connect(prov.socket)
        sock.sendall(data)
        got = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                got += chunk
        return got


def test_hostile_bytes_run_nothing_and_the_agent_serves_on(prov: Provider) -> None:
    """Oversized, malformed and unfinished requests get no answer and run no call; the agent,
    and a normal call after them, are unaffected."""
    vol = prov.volume()
    assert raw_exchange(prov, (MAX_FRAME + 1).to_bytes(4, "big") + b"x" * 1024, 5) == b""
    assert raw_exchange(prov, frame(b"\xff\xfe\0VOL_NAME=x"), 5) == b""
    started = time.monotonic()
    assert raw_exchange(prov, frame(b"create\0VOL_NAME=" + vol.encode())[:-5], HANDSHAKE_S + 5) == b""
    assert time.monotonic() - started < HANDSHAKE_S + 5  # dropped within its configured bound
    assert not prov.exists(vol)
    assert prov.agent_pid()
    prov.run("verify", vol).ok()


def test_nothing_leaked(prov: Provider) -> None:
    """Last in the module: no mapping, rbd-fuse, image or trash entry of these tests is left."""
    assert prov.leaks() == []
