"""open/close between two nodes: Ganeti's migrate and failover order, exclusivity, and fencing.

Node A uses the local cluster's config (node name: the hostname), node B the
same plus `node: nodeb` and its own run_dir; both run the real executables.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest

from ganeti_ceph import config
from ganeti_ceph.config import conf_fsid
from ganeti_ceph.rbd.mappers import Target, table
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, provider_fixture, write_device
from tests.conftest import LocalCluster

HOST = socket.gethostname()


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("provider-open")),
                                request=request)


def records(prov: Provider, vol: str) -> dict[str, str]:
    """node -> mode of the open records on the image."""
    return {k.removeprefix("ganeti.open."): json.loads(v)["mode"]
            for k, v in prov.metadata(vol).items() if k.startswith("ganeti.open.")}


DEAD_IP = "127.0.0.9"


def blocklist(local_cluster: LocalCluster, op: str, addr: str) -> None:
    with Session(local_cluster.admin) as s:
        s.mon_command("osd blocklist", blocklistop=op, addr=addr)


def blocklisted(local_cluster: LocalCluster) -> set[str]:
    with Session(local_cluster.admin) as s:
        return {e["addr"] for e in s.mon_command("osd blocklist ls") or []}


def test_node_names(prov: Provider) -> None:
    """Node A's name defaults to the hostname; node B's comes from `node:`."""
    assert config.load(prov.a).node_name == HOST
    assert config.load(prov.b).node_name == "nodeb"


def test_live_migration_then_failover(prov: Provider) -> None:
    """Ganeti's live-migrate order (B attach+close; A open(False); B open(False); A close; B open(True);
    A detach) and then failover back (B close, B detach, A attach, A open(True)) all succeed, with both
    nodes mapped at once during the handover."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    dev_a, _ = prov.attach(vol)
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()
    assert records(prov, vol) == {HOST: "exclusive"}

    dev_b, _ = prov.attach(vol, prov.b)
    assert dev_b != dev_a
    assert "was not open" in prov.run("close", vol, prov.b).ok().note
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="False").ok()
    prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="False").ok()
    assert records(prov, vol) == {HOST: "shared", "nodeb": "shared"}
    assert "closed" in prov.run("close", vol).ok().note
    prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").ok()
    prov.run("detach", vol).ok()
    assert records(prov, vol) == {"nodeb": "exclusive"}
    write_device(dev_b, os.urandom(MIB), 0)

    prov.run("close", vol, prov.b).ok()
    prov.run("detach", vol, prov.b).ok()
    prov.attach(vol)
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()
    assert records(prov, vol) == {HOST: "exclusive"}
    prov.run("close", vol).ok()
    prov.run("detach", vol).ok()
    prov.run("remove", vol).ok()


def test_exclusive_open_refuses_another_node(prov: Provider) -> None:
    """While A holds the volume exclusively, B open(True) and open(False) fail in one line naming A;
    a repeat open on A is fine; after A closes, B opens."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()
    assert "already open" in prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok().note
    for flag in ("True", "False"):
        line = prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE=flag).one_error()
        assert f"node {HOST}" in line
    assert records(prov, vol) == {HOST: "exclusive"}
    prov.run("close", vol).ok()
    prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").ok()
    assert records(prov, vol) == {"nodeb": "exclusive"}
    prov.run("close", vol, prov.b).ok()
    prov.run("remove", vol).ok()
    assert "was not open" in prov.run("close", vol).ok().note  # a gone volume closes fine


def test_exclusive_open_refused_while_another_node_holds_a_shared_record(prov: Provider) -> None:
    """Mid-migration both nodes hold shared records; neither may then open exclusively while the
    other's shared record stands (one line naming the other node), and nothing changes. Once the
    source closes, the target's exclusive open succeeds, as in Ganeti's migration order."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="False").ok()
    prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="False").ok()
    line = prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").one_error()
    assert f"node {HOST}" in line and "for migration" in line, line
    line = prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").one_error()
    assert "node nodeb" in line and "for migration" in line, line
    assert records(prov, vol) == {HOST: "shared", "nodeb": "shared"}
    prov.run("close", vol).ok()
    prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").ok()
    assert records(prov, vol) == {"nodeb": "exclusive"}
    prov.run("close", vol, prov.b).ok()
    prov.run("remove", vol).ok()


def test_fenced_owner_is_overruled(prov: Provider, local_cluster: LocalCluster) -> None:
    """A dead node's exclusive record is overruled once its whole IP is in the OSD blocklist, never before.

    All clients here share 127.0.0.1, and fencing that would cut off the test itself, so the dead
    node is a record as a node at 127.0.0.9 would have left it (records are plain image metadata);
    the blocklist and the provider are real. The Ganeti end-to-end tests fence a real node's IP.
    """
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()
    assert json.loads(prov.metadata(vol)[f"ganeti.open.{HOST}"])["ip"] == "127.0.0.1"
    prov.run("close", vol).ok()
    with prov.image(vol, read_only=False) as img:
        img.metadata_set("ganeti.open.deadnode", json.dumps({"mode": "exclusive", "ip": DEAD_IP}))
    refused = prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").one_error()
    assert "node deadnode" in refused and f"blocklist add {DEAD_IP}:0/0" in refused
    fence = f"{DEAD_IP}:0/0"
    blocklist(local_cluster, "add", fence)
    try:
        assert fence in blocklisted(local_cluster)
        prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True").ok()
        assert records(prov, vol) == {"nodeb": "exclusive"}
    finally:
        blocklist(local_cluster, "rm", fence)
    assert fence not in blocklisted(local_cluster)
    prov.run("close", vol, prov.b).ok()
    prov.run("remove", vol).ok()


def test_blocklisting_one_client_is_not_fencing(prov: Provider, local_cluster: LocalCluster) -> None:
    """A is mapped and writing; blocklisting a single client address of A (not its whole IP) does not
    fence A's mapping, so B open(True) must still be refused."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    dev, _ = prov.attach(vol)
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()
    write_device(dev, os.urandom(MIB), 0)
    one_client = "127.0.0.1:0/12345"
    blocklist(local_cluster, "add", one_client)
    try:
        res = prov.run("open", vol, prov.b, VOL_OPEN_EXCLUSIVE="True")
        write_device(dev, os.urandom(MIB), MIB)  # A was not fenced: it still writes
        assert f"node {HOST}" in res.one_error()
    finally:
        blocklist(local_cluster, "rm", one_client)
        prov.run("close", vol, prov.b).ok()
        prov.run("close", vol).ok()
        prov.run("detach", vol).ok()
        prov.run("remove", vol).ok()


def test_open_of_a_missing_volume_fails_in_one_line(prov: Provider) -> None:
    """open of a volume that does not exist is one line naming it."""
    vol = prov.volume()
    assert vol in prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").one_error()


def test_nothing_leaked(prov: Provider) -> None:
    """Last in the module: no mapping, rbd-fuse, image, snapshot or trash entry of these tests is left."""
    assert prov.leaks() == []


def guard_log(cfg: config.Config) -> str:
    with contextlib.suppress(FileNotFoundError), open(os.path.join(cfg.run_dir, "guard.log")) as fh:
        return fh.read()
    return ""


def test_failed_migration_leaves_no_mapping_on_the_target(prov: Provider) -> None:
    """A live migration that fails after B close (A's or B's open fails: the node lost Ceph) gets no
    revert from Ganeti, so B's unused mapping is unmapped once the guard's window has passed; a B open
    that followed the close, or a process holding the device, keeps it (ganeti_ceph/rbd/target_guard.py)."""
    b = prov.config("node-b-guard", node="nodeb", timeouts={"action": 5})
    cfg = config.load(b)
    vols = {case: prov.volume() for case in ("failed", "opened", "in use")}
    devs = {}
    for case, vol in vols.items():
        prov.run("create", vol, VOL_SIZE="64").ok()
        prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").ok()  # A runs the VM
        devs[case], _ = prov.attach(vol, b)
    for case, vol in vols.items():
        note = prov.run("close", vol, b).ok().note
        assert f"{devs[case]} is unmapped unless an open follows within 35 s" in note, note
    held = os.open(devs["in use"], os.O_RDONLY)  # as QEMU on B would, once the migration went on
    try:
        prov.run("open", vols["opened"], VOL_OPEN_EXCLUSIVE="False").ok()
        prov.run("open", vols["opened"], b, VOL_OPEN_EXCLUSIVE="False").ok()
        guards = os.path.join(cfg.run_dir, "guard")
        deadline = time.monotonic() + 60
        # A guard drops its marker, then unmaps: its log line is written when it is done.
        while time.monotonic() < deadline and (os.listdir(guards) or
                                               guard_log(cfg).count(" target guard ") < len(vols)):
            time.sleep(0.5)
        assert not os.listdir(guards), "the guards did not end within their window"
        assert not os.path.lexists(table.link(cfg.run_dir, Target(conf_fsid(cfg.conf), cfg.pool, vols["failed"])))
        assert prov.attach(vols["opened"], b)[0] == devs["opened"]
        assert prov.attach(vols["in use"], b)[0] == devs["in use"]
    finally:
        os.close(held)
    log = guard_log(cfg)
    assert f"unmapped {devs['failed']}: no open followed the close within 35 s" in log, log
    assert f"kept {devs['in use']}: in use by process" in log, log
    for vol in vols.values():
        prov.run("close", vol, b).ok()
        prov.run("detach", vol, b).ok()
        prov.run("close", vol).ok()
        prov.run("remove", vol).ok()



OWNER = """
import sys, rados, rbd
cluster = rados.Rados(conffile=sys.argv[1], rados_id="admin", conf={"keyring": sys.argv[2]})
cluster.connect(timeout=10)
with cluster.open_ioctx("rbd") as io, rbd.Image(io, sys.argv[3]) as img:
    img.write(b"x" * 512, 0)  # a write takes the exclusive lock
    print("held", flush=True)
    sys.stdin.read()  # until told to go: then the lock is released as the image closes
cluster.shutdown()
"""


def test_records_are_written_while_the_lock_owner_is_frozen(prov: Provider, local_cluster: LocalCluster) -> None:
    """setinfo, open and close write our records on the header object (ganeti_ceph/rbd/header.py): a
    frozen holder of the image's exclusive lock (a stopped QEMU: alive to Ceph, deaf to lock requests)
    blocks none of them. Through librbd's metadata_set each asked that holder for the lock and waited
    until Ceph dropped its watch (30 s), past this config's 20 s bound; in a crowd of 32 calls on one
    volume a setinfo waited so past its 60 s bound (CI, 2026-12-01)."""
    import signal
    import subprocess
    import sys

    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64").ok()
    bounded = prov.config("bounded", timeouts={"action": 20})
    admin = local_cluster.admin
    owner = subprocess.Popen([sys.executable, "-c", OWNER, admin.conf, admin.keyring, vol],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "held"
        owner.send_signal(signal.SIGSTOP)
        prov.run("setinfo", vol, bounded, VOL_METADATA="seen").ok()
        prov.run("open", vol, bounded, VOL_OPEN_EXCLUSIVE="True").ok()
        assert records(prov, vol) == {HOST: "exclusive"}
        assert "was not open" in prov.run("close", vol, prov.b).ok().note
        prov.run("close", vol, bounded).ok()
        assert records(prov, vol) == {}
        assert prov.metadata(vol)["ganeti.metadata"] == "seen"
    finally:
        owner.send_signal(signal.SIGCONT)
        owner.communicate("", timeout=60)
    prov.run("remove", vol).ok()
