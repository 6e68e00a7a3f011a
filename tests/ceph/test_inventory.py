"""`gnt-storage volume list|show` on the real local cluster, over volumes the installed provider made.

Ceph's side is real: sizes, fast-diff use after writes, a clone's parent, snapshots, open records, a watcher
(an open librbd client, as QEMU holds a userspace disk). Ganeti's side is its answer as `gnt-instance list`
and `gnt-node list` print it (there is no Ganeti here): the core gets it through Ganeti's own parsers, the
command line through stand-in gnt-* programs on PATH that print it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
import rbd

from ganeti_ceph import config
from ganeti_ceph.config import Config
from ganeti_ceph.ganeti.cli import DISK_SEP, SEP, GDisk, GNode, parse_instance_disks, parse_nodes
from ganeti_ceph.rbd import inventory
from ganeti_ceph.session import Session, one_shot
from tests.ceph.provider_env import MIB, Provider, provider_fixture
from tests.conftest import BIN, GNT_STORAGE, LocalCluster

HOST = os.uname().nodename
OPEN = ",".join(f"{n}:shared" for n in sorted([HOST, "nodeb"]))  # open records, by node name
INSTANCE = "web.inventory.test"


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("inventory")))


class Answer:
    """Ganeti's answer, as its commands print it, read by the real parsers."""

    def __init__(self, instances: str, nodes: str) -> None:
        self.instances, self.nodes_text = instances, nodes
        self.asked: list[str] = []

    def instance_disks(self) -> list[GDisk]:
        self.asked.append("instances")
        return parse_instance_disks(self.instances)

    def nodes(self) -> list[GNode]:
        self.asked.append("nodes")
        return parse_nodes(self.nodes_text)


def answer_for(prov: Provider, first: str, second: str) -> Answer:
    uuids = [prov.uuids[first], prov.uuids[second]]
    instances = DISK_SEP.join([INSTANCE, repr(uuids), "[None, 'data']"]) + "\n" + \
        DISK_SEP.join(["other.inventory.test", repr([str(uuid.uuid4())]), "[None]"]) + "\n"
    return Answer(instances, SEP.join([HOST, "127.0.0.1", "default", "N", "Y", "127.0.0.1"]) + "\n")


@pytest.fixture(scope="module")
def made(prov: Provider, local_cluster: LocalCluster) -> Iterator[dict[str, str]]:
    """vol (64 MiB, userspace, 2 objects written, a snapshot volume taken), its clone (128 MiB, 1 object written,
    open shared on both nodes as in a live migration) and an orphan image nobody made through the provider."""
    vol, clone = prov.volume(), prov.volume(1)
    snapvol = prov.track(f"{vol}.snap")
    orphan = prov.track(f"Orphan_{uuid.uuid4().hex[:8]}")  # not a name the provider would make
    prov.run("create", vol, VOL_SIZE="64", EXTP_ACCESS="userspace").ok()
    prov.write(vol, os.urandom(MIB), 0)
    prov.write(vol, os.urandom(MIB), 9 * MIB)  # objects 0 and 2 of 4 MiB each
    prov.run("create", clone, VOL_SIZE="128", EXTP_ORIGIN=vol).ok()
    prov.write(clone, os.urandom(MIB), 20 * MIB)  # object 5
    prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol, VOL_SNAPSHOT_SIZE="64").ok()
    prov.run("open", clone, VOL_OPEN_EXCLUSIVE="False").ok()
    prov.run("open", clone, prov.b, VOL_OPEN_EXCLUSIVE="False").ok()
    with Session(local_cluster.client) as s, s.ioctx() as io:
        rbd.RBD().create(io, orphan, 32 * MIB, old_format=False)
    yield {"vol": vol, "clone": clone, "snapvol": snapvol, "orphan": orphan}
    for node in (prov.a, prov.b):
        prov.run("close", clone, node).ok()
    for name in (clone, snapvol, vol):
        prov.run("remove", name).ok()
    with Session(local_cluster.client) as s, s.ioctx() as io:
        rbd.RBD().remove(io, orphan)


@contextlib.contextmanager
def watched(cluster: LocalCluster, name: str) -> Iterator[None]:
    """An image held open by another client, as QEMU holds a userspace disk (a watcher at 127.0.0.1)."""
    with Session(cluster.client) as s, s.ioctx() as io, rbd.Image(io, name):
        yield


def counting(calls: list[Config]):
    def sessions(cfg: Config):
        calls.append(cfg)
        return one_shot(cfg)
    return sessions


def test_inventory_of_provider_volumes(prov: Provider, local_cluster: LocalCluster, made: dict[str, str]) -> None:
    """Owner and disk by the recorded UUID, size, use from fast-diff (whole objects written), access, snapshots,
    the clone's parent, open records, the watcher named as Ganeti's node, the orphan; the whole listing in one
    session and one Ganeti query for the instances (one more for node addresses: there is a watcher)."""
    vol, clone, orphan = made["vol"], made["clone"], made["orphan"]
    ans = answer_for(prov, vol, clone)
    calls: list[Config] = []
    with watched(local_cluster, vol):
        vols = inventory.volumes(local_cluster.client, ganeti=ans, sessions=counting(calls))  # type: ignore[arg-type]
    assert len(calls) == 1 and ans.asked == ["instances", "nodes"]
    by_name = {v.image.name: v for v in vols}
    assert {vol, clone, orphan} <= set(by_name)
    v, c, o = by_name[vol], by_name[clone], by_name[orphan]

    assert v.disk == GDisk(INSTANCE, 0, prov.uuids[vol], "") and c.disk == GDisk(INSTANCE, 1, prov.uuids[clone], "data")
    assert o.disk is None and inventory.row(o)["instance"] == "-" and "orphan" in inventory.owner_text(o)
    origin_snap = next(s for s in v.image.snapshots if s.startswith("ganeti-clone-"))
    assert len(v.image.snapshots) == 2  # the clone's origin snapshot and the snapshot volume's point in time
    rows = {r["name"]: r for r in map(inventory.row, (v, c, o))}
    assert {k: rows[vol][k] for k in ("size", "used", "access", "mapped", "open", "snapshots", "parent")} == {
        "size": 64, "used": 8, "access": "userspace", "mapped": HOST, "open": "-", "snapshots": 2, "parent": "-"}
    assert {k: rows[clone][k] for k in ("size", "used", "access", "mapped", "open", "snapshots", "parent")} == {
        "size": 128, "used": 4, "access": "kernelspace", "mapped": "-", "open": OPEN,
        "snapshots": 0, "parent": f"rbd/{vol}@{origin_snap}"}
    assert (rows[orphan]["size"], rows[orphan]["used"], rows[orphan]["access"]) == (32, 0, "-")

    # without a watcher, no node query; only the named images are read
    ans.asked.clear()
    named = inventory.volumes(local_cluster.client, [clone, vol], ganeti=ans)  # type: ignore[arg-type]
    assert [x.image.name for x in named] == sorted([vol, clone]) and ans.asked == ["instances"]
    assert [x.image.name for x in inventory.volumes(local_cluster.client, instance=INSTANCE, ganeti=ans)] == \
        sorted([vol, clone])  # type: ignore[arg-type]
    shown = inventory.one(local_cluster.client, f"{INSTANCE}:data", ganeti=ans)  # type: ignore[arg-type]
    assert shown.image.name == clone


def fake_ganeti(tmp: str, ans: Answer) -> dict[str, str]:
    """An environment whose gnt-instance and gnt-node print Ganeti's answer (and log that they ran)."""
    bin_dir = os.path.join(tmp, "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for tool, text in (("gnt-instance", ans.instances), ("gnt-node", ans.nodes_text)):
        with open(os.path.join(tmp, tool), "w") as fh:
            fh.write(text)
        with open(os.path.join(bin_dir, tool), "w") as fh:
            fh.write(f'#!/bin/sh\necho "$*" >> {tmp}/calls\ncat {tmp}/{tool}\n')
        os.chmod(os.path.join(bin_dir, tool), 0o755)
    return {"PATH": f"{bin_dir}:{BIN}:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def volume_cmd(env: dict[str, str], cfg_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GNT_STORAGE, "volume", *args], capture_output=True, text=True, timeout=120,
                          env={**env, config.ENV_VAR: cfg_path}, stdin=subprocess.DEVNULL, check=False)


def test_command_line(prov: Provider, local_cluster: LocalCluster, made: dict[str, str],
                      tmp_path: pytest.TempPathFactory) -> None:
    """gnt-* style lines (--output, --separator, --no-headers, units), `show` by name and by INSTANCE:DISK,
    and refusals as one line with a non-zero exit."""
    vol, clone = made["vol"], made["clone"]
    env = fake_ganeti(str(tmp_path), answer_for(prov, vol, clone))
    cfg = prov.a
    res = volume_cmd(env, cfg, "list", vol, clone, "-o", "name,instance,disk,size,used,snapshots,open",
                     "--separator", "|", "--no-headers")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == sorted([f"{vol}|{INSTANCE}|0|64|8|2|-",
                                              f"{clone}|{INSTANCE}|1 (data)|128|4|0|{OPEN}"])
    with open(os.path.join(str(tmp_path), "calls")) as fh:
        assert [line.split()[0] for line in fh] == ["list"]  # one gnt-instance list, no node query (no watcher)

    res = volume_cmd(env, cfg, "list", "--instance", INSTANCE)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["Name", "Instance", "Disk", "Backend", "Size", "Used", "Access", "Mapped",
                                "Snapshots"]
    assert lines[1].split() == [min(vol, clone), INSTANCE, *(["0", "default", "64M", "8M", "userspace", "-", "2"]
                                if vol < clone else ["1", "(data)", "default", "128M", "4M", "kernelspace", "-", "0"])]
    assert len(lines) == 3

    res = volume_cmd(env, cfg, "show", f"{INSTANCE}:1")
    assert res.returncode == 0, res.stderr
    assert f"Name:      {clone}\n" in res.stdout and f"Parent:    rbd/{vol}@ganeti-clone-" in res.stdout
    assert "Open:\n" + "".join(f"  {n}: shared, ip 127.0.0.1\n" for n in sorted([HOST, "nodeb"])) in res.stdout
    res = volume_cmd(env, cfg, "show", vol)
    assert res.returncode == 0, res.stderr
    assert "Snapshots: 2\n  ganeti-" in res.stdout and "Used:      8M\n" in res.stdout
    res = volume_cmd(env, cfg, "show", made["orphan"])
    assert res.returncode == 0, res.stderr
    assert "Instance:  - (orphan: it records no Ganeti disk" in res.stdout and "Size:      32M\n" in res.stdout

    for args, code, text in ((["show", f"{INSTANCE}:7"], 2, f"instance {INSTANCE} has no disk 7; its disks: 0, 1"),
                             (["list", "no-such-image"], 5, "no image no-such-image in our pools (default:rbd)"),
                             (["list", "-o", "name,colour"], 2, "--output: unknown field(s) colour"),
                             (["list", "--backend", "nope"], 2, "no backend nope; backends: default"),
                             (["list", "--instance", "nope"], 2, "instance nope does not exist")):
        res = volume_cmd(env, cfg, *args)
        assert (res.returncode, res.stdout) == (code, ""), (args, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith(f"gnt-storage: {text}"), res.stderr


def test_five_hundred_volumes_one_pass(local_cluster: LocalCluster) -> None:
    """500 images (made by librbd, each recording a disk UUID of one of 250 instances): one session, one Ganeti
    query, every image listed with its owner, in the pool's order, none missed by the concurrent readers."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"inv-many-{i:03d}" for i in range(500)]
    uuids = {n: str(uuid.uuid4()) for n in names}
    cfg = local_cluster.client

    def make(io: object, name: str) -> None:
        rbd.RBD().create(io, name, 8 * MIB, old_format=False)
        with rbd.Image(io, name) as img:
            img.metadata_set("ganeti.uuid", uuids[name])

    instances = "".join(DISK_SEP.join([f"i{k}", repr([uuids[names[2 * k]], uuids[names[2 * k + 1]]]), "[None, None]"])
                        + "\n" for k in range(250))
    ans = Answer(instances, "")
    calls: list[Config] = []
    with Session(cfg) as s, s.ioctx() as io:
        try:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda n: make(io, n), names))
            vols = [v for v in inventory.volumes(cfg, ganeti=ans, sessions=counting(calls))  # type: ignore[arg-type]
                    if v.image.name.startswith("inv-many-")]
        finally:
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda n: rbd.RBD().remove(io, n), names))
    assert len(calls) == 1 and ans.asked == ["instances"]
    assert [(v.image.name, v.disk.instance if v.disk else None, v.disk.index if v.disk else None) for v in vols] == \
        [(n, f"i{i // 2}", i % 2) for i, n in enumerate(names)]
