"""The test bed's teardown waits for sockets still closing on its bridge address (`make demo` right
after `make bench` once ended in "something still listens on 198.51.100.1", a traceback and a
left bridge, while the listener was gone a moment later), and `make demo`'s Ganeti half fails in
one line, never a traceback. Real bridge, real listening processes; no Ceph or Ganeti is started
(a Ceph daemon's socket is what lingers in practice; a plain listener stands in for its lifetime)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError
from scripts import demo_ganeti
from testbed import netns
from testbed.ganeti import NET_PREFIX, TESTBED_ID, Testbed, listeners
from testbed.ganeti import TestbedError as BedError

PORT = int(os.environ.get("GANETI_TESTBED_CEPH_PORT", "13400"))
LINGER_S = 3  # how long the stand-in keeps listening
# A bed network of its own: `make test` has the session's bed (GANETI_TESTBED_ID) up meanwhile, and
# bench/ (3) and tests/storage (5) have theirs. Derived from the session's, so parallel sessions differ.
_NET = NET_PREFIX.rstrip(".").rsplit(".", 1)
BED_ID = os.environ.get("GANETI_TEARDOWN_TEST_ID", f"{TESTBED_ID}t")
NET = os.environ.get("GANETI_TEARDOWN_TEST_NET", f"{_NET[0]}.{(int(_NET[1]) + 128) % 256}")


@pytest.fixture
def bed(tmp_path) -> Iterator[Testbed]:
    """A bed network of its own (BED_ID, NET) with only its bridge up."""
    if os.geteuid() != 0:
        pytest.fail("the test bed needs root")
    tb = Testbed(str(tmp_path / "gtb"), None, nodes=1, bed_id=BED_ID, net=NET)
    assert not netns.link_exists(tb.bridge), f"{tb.bridge} is in use; is another session on this bed id?"
    tb.network_up()
    try:
        yield tb
    finally:
        netns.link_delete(tb.bridge)


def listener(addr: str, seconds: float) -> subprocess.Popen:
    """A process listening on addr:PORT for `seconds`, then gone; returned once it listens."""
    code = (f"import socket, time; s = socket.socket(); s.bind(({addr!r}, {PORT})); s.listen(); "
            f"print('ready', flush=True); time.sleep({seconds})")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout and child.stdout.readline() == "ready\n"
    assert any(f"pid {child.pid} " in line for line in listeners(addr))
    return child


def test_network_down_waits_for_a_listener_that_is_going_away(bed: Testbed) -> None:
    child = listener(bed.host_addr, LINGER_S)
    try:
        bed.network_down()  # before the fix: TestbedError at once, bridge kept
        assert child.poll() is not None, "the bridge went while something still listened on it"
        assert not netns.link_exists(bed.bridge)
    finally:
        child.kill()
        child.wait()


def test_network_down_names_a_listener_that_stays_and_keeps_the_bridge(bed: Testbed) -> None:
    child = listener(bed.host_addr, 600)
    try:
        with pytest.raises(BedError, match=rf"pid {child.pid} \(.*python.*\) on port\(s\) {PORT} still listens "
                                               rf"on {bed.host_addr} after 1 s: stop it"):
            bed.network_down(wait=1)
        assert netns.link_exists(bed.bridge)
    finally:
        child.kill()
        child.wait()
    bed.network_down()
    assert not netns.link_exists(bed.bridge)


def test_demo_waits_for_an_earlier_listener_and_fails_in_one_line(bed: Testbed, tmp_path) -> None:
    """`make demo`'s Ganeti half on a bridge an earlier command still listens on: its bring-up waits
    for that listener instead of tripping over it later; its own failure (here: local-cluster up
    refuses a foreign directory) is a GanetiCephError (one line from run_main), and the bridge goes."""
    ceph_dir = tmp_path / "ceph"
    ceph_dir.mkdir()
    (ceph_dir / "not-a-cluster.txt").write_text("x")
    child = listener(bed.host_addr, LINGER_S)
    try:
        with pytest.raises(GanetiCephError, match="is not empty and holds no local cluster"):
            demo_ganeti.main(str(tmp_path / "gtb"), str(ceph_dir), PORT + 50, keep=False, bed_id=BED_ID, net=NET)
        assert child.poll() is not None
        assert runner.until(time.monotonic() + 5, lambda: not netns.link_exists(bed.bridge))
    finally:
        child.kill()
        child.wait()
