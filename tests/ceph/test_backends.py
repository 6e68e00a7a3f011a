"""Backends on real Ceph: two pools, one RBD namespace and a second cluster, with the catalogue made by
`gnt-storage backend add` and volumes made by the installed provider, as ganeti-noded runs it.

The session's local cluster gets pools `fast` and `slow` (the client's caps widened as an admin would)
and the namespace `tenant` in its `rbd` pool; a second local cluster (`far`, port
GANETI_CEPH_FAR_PORT, default 13900) is started here. Placement by tags and by cost, quotas, the
overcommit check, records found by every later call (from another node's config too), and refusals
that change nothing are checked against what Ceph holds.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import rbd

from ganeti_ceph import config as gconfig
from ganeti_ceph.config import Config
from ganeti_ceph.rbd import backends
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, provider_fixture
from tests.conftest import GNT_STORAGE, TEST_DIR, LocalCluster, gnt_storage

FAR_PORT = int(os.environ.get("GANETI_CEPH_FAR_PORT", "13900"))
FAR_DIR = f"{TEST_DIR}-far"
POOLS = ("fast", "slow")


@dataclass
class Bed:
    prov: Provider
    cluster: LocalCluster
    far: Config  # the far cluster's client config
    cfg: str  # node A's config, naming the catalogue
    cfg_b: str  # node B's
    catalogue: str

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ["PATH"], "GANETI_CEPH_CONFIG": self.cfg, "LC_ALL": "C"}
        return subprocess.run([GNT_STORAGE, "backend", *args], capture_output=True, text=True, timeout=120,
                              env=env, stdin=subprocess.DEVNULL, check=False)

    def ok(self, *args: str) -> str:
        res = self.cli(*args)
        assert res.returncode == 0, f"gnt-storage backend {' '.join(args)}: {res.stderr}"
        return res.stdout

    def images(self, location: str, far: bool = False) -> list[str]:
        with Session(self.far if far else self.cluster.admin) as s, s.ioctx(location) as io:
            return sorted(rbd.RBD().list(io))

    def record(self, vol: str) -> backends.Record | None:
        with Session(self.cluster.admin) as s:
            return backends.lookup(s, "rbd", vol)


def _admin(cluster: LocalCluster, *cmds: dict) -> None:
    with Session(cluster.admin) as s:
        for cmd in cmds:
            s.mon_command(**cmd)


@pytest.fixture(scope="module")
def far_cluster() -> Iterator[Config]:
    res = gnt_storage("local-cluster", "up", "--dir", FAR_DIR, "--port", str(FAR_PORT), "--osds", "1")
    if res.returncode != 0:
        gnt_storage("local-cluster", "down", "--dir", FAR_DIR)
        pytest.fail(f"the far cluster did not come up: {res.stderr}")
    try:
        yield gconfig.load(os.path.join(FAR_DIR, "ganeti-ceph.yaml"))
    finally:
        gnt_storage("local-cluster", "down", "--dir", FAR_DIR)


@pytest.fixture(scope="module")
def bed(local_cluster: LocalCluster, far_cluster: Config, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[Bed]:
    client = local_cluster.client.client_id
    have = set()
    with Session(local_cluster.admin) as s:
        have = set(s.mon_command("osd pool ls") or [])
    for pool in POOLS:
        if pool not in have:
            _admin(local_cluster, {"prefix": "osd pool create", "pool": pool, "pg_num": 8, "pgp_num": 8},
                   {"prefix": "osd pool application enable", "pool": pool, "app": "rbd"})
    with Session(local_cluster.admin) as s:  # new pools reach `ceph df` (the mgr's digest) a moment later
        deadline = time.monotonic() + 60
        while not set(POOLS) <= backends.pool_stats(s.mon_command("df", detail="detail")).keys():
            assert time.monotonic() < deadline, "the new pools never showed in ceph df"
            time.sleep(0.5)
    with Session(local_cluster.admin) as s:  # the client's caps, given back at the end (others test them)
        before = s.mon_command("auth get", entity=f"client.{client}")[0]["caps"]
    caps = ", ".join(f"profile rbd pool={p}" for p in ("rbd", *POOLS))
    _admin(local_cluster, {"prefix": "auth caps", "entity": f"client.{client}",
                           "caps": ["mon", "profile rbd", "osd", caps, "mgr", caps]})
    base = str(tmp_path_factory.mktemp("backends"))
    cat = os.path.join(base, "ceph-backends.yaml")
    gen = provider_fixture(local_cluster, base, request=request)
    prov = next(gen)
    b = Bed(prov, local_cluster, far_cluster, prov.config("cat-a", catalogue=cat),
            prov.config("cat-b", node="nodeb", catalogue=cat), cat)
    try:
        yield b
    finally:
        for location in ("fast", "slow", "rbd/tenant"):
            _drop(local_cluster.admin, location, prov.volumes)
        _drop(far_cluster, "rbd", prov.volumes)
        with Session(local_cluster.admin) as s, s.ioctx("rbd") as io:
            io.remove_object(backends.INDEX)
        _admin(local_cluster, {"prefix": "auth caps", "entity": f"client.{client}",
                               "caps": [x for kv in sorted(before.items()) for x in kv]})
        next(gen, None)


def _drop(cfg: Config, location: str, names: list[str]) -> None:
    with Session(cfg) as s, s.ioctx(location) as io:
        for name in set(names) & set(rbd.RBD().list(io)):
            rbd.RBD().remove(io, name)


def _text(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def test_the_catalogue_is_made_by_backend_add(bed: Bed) -> None:
    assert not os.path.exists(bed.catalogue)
    assert bed.ok("list", "--no-headers", "-o", "name,pool").split() == ["default", "rbd"]  # no file: ceph.yaml's
    bed.ok("add", "default", "--pool", "rbd", "--tags", "hdd", "--cost", "5")
    bed.ok("add", "fast", "--pool", "fast", "--tags", "ssd", "--cost", "2")
    bed.ok("add", "slow", "--pool", "slow", "--tags", "hdd", "--cost", "1", "--quota-volumes", "2")
    out = bed.ok("add", "tenant", "--pool", "rbd", "--namespace", "tenant", "--tags", "ssd", "--cost", "3")
    assert "not in a Ganeti cluster" in out
    far = bed.far
    bed.ok("add", "far", "--pool", "rbd", "--conf", far.conf, "--keyring", far.keyring, "--client", far.client_id,
           "--cluster", "far", "--tags", "ssd+remote", "--cost", "4")
    with Session(bed.cluster.admin) as s, s.ioctx("rbd") as io:
        assert rbd.RBD().namespace_exists(io, "tenant")  # made by add
    rows = [line.split("|") for line in bed.ok("list", "--no-headers", "--separator=|", "-o",
                                               "name,pool,tags,cost,volumes,status").splitlines()]
    assert rows == [["default", "rbd", "hdd", "5", "0", "ok"], ["fast", "fast", "ssd", "2", "0", "ok"],
                    ["slow", "slow", "hdd", "1", "0", "ok"], ["tenant", "rbd/tenant", "ssd", "3", "0", "ok"],
                    ["far", "rbd", "remote+ssd", "4", "0", "ok"]]


def test_a_second_add_or_a_bad_value_changes_nothing(bed: Bed) -> None:
    before = _text(bed.catalogue)
    for args, says in ((("add", "fast", "--pool", "slow"), "exists"),
                       (("add", "x", "--pool", "nosuchpool"), "nosuchpool"),
                       (("add", "y", "--pool", "fast", "--cost", "-1"), "cost"),
                       (("modify", "nosuch", "--cost", "1"), "unknown backend"),
                       (("remove", "default"), "cannot be removed")):
        res = bed.cli(*args)
        assert res.returncode != 0 and says in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert "Traceback" not in res.stderr
    assert _text(bed.catalogue) == before


def test_placement_by_tags_and_cost(bed: Bed) -> None:
    prov = bed.prov
    ssd, cheap, named = prov.volume(), prov.volume(), prov.volume()
    assert prov.run("create", ssd, bed.cfg, VOL_SIZE="64", EXTP_TAGS="ssd").ok()
    assert ssd in bed.images("fast") and bed.record(ssd) == backends.Record("fast", 64 * MIB)
    assert prov.run("create", cheap, bed.cfg, VOL_SIZE="32").ok()  # no choice: the cheapest with room
    assert cheap in bed.images("slow") and bed.record(cheap).backend == "slow"
    assert prov.run("create", named, bed.cfg, VOL_SIZE="32", EXTP_BACKEND="tenant", EXTP_ACCESS="userspace").ok()
    assert named in bed.images("rbd/tenant") and named not in bed.images("rbd")
    # Every later call finds the volume by its record, from either node's config.
    dev, uri = prov.attach(ssd, bed.cfg_b)
    assert uri == f"kvm:rbd:fast/{ssd}:id=ganeti" and dev.startswith("/dev/")
    pattern = os.urandom(MIB)
    with open(dev, "r+b", buffering=0) as fh:
        fh.seek(MIB)
        fh.write(pattern)
    with Session(bed.cluster.admin) as s, s.ioctx("fast") as io, rbd.Image(io, ssd, read_only=True) as img:
        assert img.read(MIB, MIB) == pattern
    assert prov.run("detach", ssd, bed.cfg_b).ok()
    assert prov.attach(named, bed.cfg, EXTP_ACCESS="userspace")[1] == f"kvm:rbd:rbd/tenant/{named}:id=ganeti"
    assert prov.run("grow", ssd, bed.cfg, VOL_SIZE="64", VOL_NEW_SIZE="96").ok()
    assert bed.record(ssd).size == 96 * MIB
    for vol in (ssd, cheap, named):
        assert prov.run("remove", vol, bed.cfg).ok()
        assert bed.record(vol) is None
    assert not set(bed.images("fast") + bed.images("slow") + bed.images("rbd/tenant")) & {ssd, cheap, named}


def test_a_second_cluster(bed: Bed) -> None:
    prov = bed.prov
    vol = prov.volume()
    assert prov.run("create", vol, bed.cfg, VOL_SIZE="48", EXTP_TAGS="remote").ok()
    assert vol in bed.images("rbd", far=True) and vol not in bed.images("rbd")
    dev, _uri = prov.attach(vol, bed.cfg)
    assert os.path.exists(dev)
    with open(dev, "r+b", buffering=0) as fh:
        fh.write(b"far away" * 512)
    with Session(bed.far) as s, s.ioctx("rbd") as io, rbd.Image(io, vol, read_only=True) as img:
        assert img.read(0, 8) == b"far away"
    assert prov.run("detach", vol, bed.cfg).ok()
    assert prov.run("remove", vol, bed.cfg).ok()
    assert vol not in bed.images("rbd", far=True)


def test_quota_and_room_refusals_change_nothing(bed: Bed) -> None:
    prov = bed.prov
    kept = [prov.volume(), prov.volume()]
    for vol in kept:
        assert prov.run("create", vol, bed.cfg, VOL_SIZE="16", EXTP_BACKEND="slow").ok()
    third = prov.volume()
    line = prov.run("create", third, bed.cfg, VOL_SIZE="16", EXTP_BACKEND="slow").one_error()
    assert "volume quota 2 reached" in line and "backend slow" in line
    assert third not in bed.images("slow") and bed.record(third) is None
    # No tag matches: every backend is named with its reason.
    line = prov.run("create", third, bed.cfg, VOL_SIZE="16", EXTP_TAGS="nvme").one_error()
    for name in ("default", "fast", "slow", "tenant", "far"):
        assert f"{name}: lacks tag nvme" in line
    # Far more than any pool holds: no room anywhere (slow is full by its quota).
    line = prov.run("create", third, bed.cfg, VOL_SIZE=str(64 << 20)).one_error()
    assert "no backend can take a 65536 GiB volume" in line and "slow: volume quota 2 reached" in line
    assert line.count("no room") == 4
    assert bed.record(third) is None and not any(third in bed.images(p) for p in ("fast", "slow", "rbd"))
    # A grow past the quota is refused too, the size unchanged.
    bed.ok("modify", "slow", "--quota-gib", "0.03")
    line = prov.run("grow", kept[0], bed.cfg, VOL_SIZE="16", VOL_NEW_SIZE="64").one_error()
    assert "quota" in line
    with Session(bed.cluster.admin) as s, s.ioctx("slow") as io, rbd.Image(io, kept[0], read_only=True) as img:
        assert img.size() == 16 * MIB
    # What holds volumes is neither removed nor moved.
    assert "holds 2 volume(s)" in bed.cli("remove", "slow").stderr
    assert "cannot change" in bed.cli("modify", "slow", "--pool", "fast").stderr
    shown = dict(line.split(":", 1) for line in bed.ok("show", "slow").splitlines())
    assert shown["Volumes"].strip() == "2" and shown["Quota"].strip() == "0.03 GiB, 2 volumes"
    for vol in kept:
        assert prov.run("remove", vol, bed.cfg).ok()
    bed.ok("modify", "slow", "--quota-gib", "0")
    bed.ok("remove", "slow")
    assert "slow" not in bed.ok("list", "--no-headers", "-o", "name").split()


def test_top_and_show(bed: Bed) -> None:
    out = bed.ok("top", "--count", "1", "--interval", "0.1", "--sort", "use")
    assert out.startswith("gnt-storage backend top") and "fast" in out and "Read/s" in out
    shown = bed.ok("show", "far", "--units", "m")
    assert "Cluster:" in shown and "far" in shown and "Capacity:" in shown


def test_a_bad_catalogue_is_one_line(bed: Bed) -> None:
    good = _text(bed.catalogue)
    try:
        with open(bed.catalogue, "w") as fh:
            fh.write("backends:\n- name: x\n  pool: rbd\n  colour: red\n")
        res = bed.prov.run("create", bed.prov.volume(), bed.cfg, VOL_SIZE="16")
        assert "colour" in res.one_error()
        res = bed.cli("list")
        assert res.returncode != 0 and "colour" in res.stderr and "Traceback" not in res.stderr
    finally:
        with open(bed.catalogue, "w") as fh:
            fh.write(good)


def test_hooks_and_cleanup_find_placed_volumes(bed: Bed) -> None:
    """The start hook reads a placed volume's access mode where its record says; the post hooks'
    cleanup unmaps it on whichever cluster; userspace on another cluster names its conf and keyring."""
    from hooks import images
    from hooks.env import Disk

    prov = bed.prov
    near, far = prov.volume(), prov.volume()
    assert prov.run("create", near, bed.cfg, VOL_SIZE="16", EXTP_BACKEND="fast", EXTP_ACCESS="userspace").ok()
    assert prov.run("create", far, bed.cfg, VOL_SIZE="16", EXTP_BACKEND="far").ok()
    cfg = gconfig.load(bed.cfg)
    with Session(cfg) as s:
        assert images.find(s, cfg, Disk(0, "rbd", near, 16)).access == "userspace"
        found = images.find(s, cfg, Disk(1, "rbd", far, 16))
        assert (found.pool, found.access) == ("rbd", "kernelspace")
    uri = prov.attach(far, bed.cfg, EXTP_ACCESS="userspace")[1]
    assert uri == f"kvm:rbd:rbd/{far}:id={bed.far.client_id}:conf={bed.far.conf}:keyring={bed.far.keyring}"
    dev_near, _ = prov.attach(near, bed.cfg, EXTP_ACCESS="kernelspace")
    dev_far, _ = prov.attach(far, bed.cfg)
    assert os.path.exists(dev_near) and os.path.exists(dev_far)
    from ganeti_ceph.rbd.service import VolumeService

    undone = VolumeService(cfg).detach_all([near, far])
    assert sorted((r.pool, r.name) for r in undone) == sorted([("fast", near), ("rbd", far)])
    for vol in (near, far):
        assert "was not mapped" in prov.run("detach", vol, bed.cfg).ok().note
        assert prov.run("remove", vol, bed.cfg).ok()


def test_the_inventory_lists_every_backend(bed: Bed) -> None:
    """`volume list` walks every backend of the catalogue: pools, the namespace and the other cluster."""
    from ganeti_ceph.rbd import inventory

    prov = bed.prov
    made = {"fast": prov.volume(), "tenant": prov.volume(), "far": prov.volume()}
    for backend, vol in made.items():
        assert prov.run("create", vol, bed.cfg, VOL_SIZE="8", EXTP_BACKEND=backend, EXTP_ACCESS="userspace").ok()
    cfg = gconfig.load(bed.cfg)
    vols = inventory.volumes(cfg, disks=[], ganeti=None, names=list(made.values()))
    assert {(v.image.backend, v.image.pool, v.image.name) for v in vols} == {
        ("fast", "fast", made["fast"]), ("tenant", "rbd/tenant", made["tenant"]), ("far", "rbd", made["far"])}
    assert [v.image.name for v in inventory.volumes(cfg, disks=[], backend="tenant")] == [made["tenant"]]
    for vol in made.values():
        assert prov.run("remove", vol, bed.cfg).ok()


def test_local_cluster_up_registers_itself(bed: Bed) -> None:
    """`local-cluster up --backend NAME` adds the cluster to the catalogue (a rerun says it is there)."""
    env = {"PATH": os.environ["PATH"], "GANETI_CEPH_CONFIG": bed.cfg, "LC_ALL": "C"}
    argv = [GNT_STORAGE, "local-cluster", "up", "--dir", FAR_DIR, "--port", str(FAR_PORT), "--osds", "1",
            "--backend", "far2", "--tags", "lab"]
    for says in ("written", "in the catalogue already"):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env, check=False)
        assert res.returncode == 0 and says in res.stdout, res.stdout + res.stderr
    rows = bed.ok("list", "far2", "--no-headers", "--separator=|", "-o", "name,tags,status")
    assert rows == "far2|lab|ok\n"
    bed.ok("remove", "far2")


def test_an_export_snapshot_of_a_placed_volume_goes_where_it_is(bed: Bed) -> None:
    """Ganeti's export: snapshot, then attach, read and remove the snapshot volume with the disk's parameters
    (no backend): the snapshot volume's record sends each call to the placed volume's pool, and the volume
    stays removable (review #1)."""
    prov = bed.prov
    vol = prov.volume()
    snapvol = prov.track(f"{vol}.snap")
    assert prov.run("create", vol, bed.cfg, VOL_SIZE="16", EXTP_TAGS="ssd", EXTP_ACCESS="userspace").ok()
    assert bed.record(vol).backend == "fast"
    assert "made" in prov.run("snapshot", vol, bed.cfg, VOL_SNAPSHOT_NAME=snapvol, VOL_SNAPSHOT_SIZE="16",
                              EXTP_TAGS="ssd", EXTP_ACCESS="userspace").ok().note
    assert bed.record(snapvol) == backends.Record("fast", 0, backends.SNAPSHOT)
    uri = prov.attach(snapvol, bed.cfg, EXTP_TAGS="ssd", EXTP_ACCESS="userspace")[1]
    assert uri == f"kvm:rbd:fast/{snapvol}:id=ganeti" and snapvol in bed.images("fast")
    assert "removed" in prov.run("remove", snapvol, bed.cfg, EXTP_TAGS="ssd").ok().note
    assert bed.record(snapvol) is None
    rows = bed.ok("list", "fast", "--no-headers", "--separator=|", "-o", "volumes")
    assert rows == "1\n"  # the snapshot volume was never counted
    assert "removed" in prov.run("remove", vol, bed.cfg, EXTP_TAGS="ssd").ok().note


def test_the_index_backend_does_not_move_while_it_holds_records(bed: Bed) -> None:
    """Every placement record lives in the index backend's pool: moving it, or removing it, would route
    every placed volume to nowhere (review #2)."""
    prov = bed.prov
    vol = prov.volume()
    assert prov.run("create", vol, bed.cfg, VOL_SIZE="8", EXTP_BACKEND="fast", EXTP_ACCESS="userspace").ok()
    res = bed.cli("modify", "default", "--pool", "slow")
    assert res.returncode != 0 and "holds the placement records of" in res.stderr, res.stderr
    assert prov.run("remove", vol, bed.cfg).ok()
    # An origin is looked up where its disk goes: with tags, there is no telling where that is.
    line = prov.run("create", prov.volume(), bed.cfg, VOL_SIZE="8", EXTP_TAGS="ssd", EXTP_ORIGIN="x").one_error()
    assert "name it (backend=)" in line
