"""Pure parts of init-distributed-storage: options, Ganeti output, placement, node requests, conf."""

from __future__ import annotations

import os

import pytest

from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti import parse_groups, parse_nodes
from gnt_storage.deploy import cephconf, devices, distributed, lifecycle, node, options
from gnt_storage.deploy.options import StorageOptions
from hooks.env import parse as parse_hook_env

NODES = ["n2.example", "n0.example", "n1.example"]
ADDRS = {"n0.example": "10.0.0.10", "n1.example": "10.0.0.11", "n2.example": "10.0.0.12"}


class TestOptions:
    def test_devices_continue_after_commas(self) -> None:
        o = options.parse(["ceph:disk=/dev/sdb,/dev/sdc,mons=3,pool=vms"])
        assert o.disk == ("/dev/sdb", "/dev/sdc") and o.mons == 3 and o.pool == "vms"

    @pytest.mark.parametrize("spec, words", [
        ("ceph:mons=2", "odd count"), ("ceph:mons=7", "from 1 to 5"), ("ceph:disk=sdb", "absolute"),
        ("ceph:disk=/dev/sdb,/dev/sdb", "twice"), ("ceph:color=red", "unknown option"),
        ("lvm:disk=/dev/sdb", "look like ceph:"), ("ceph:pg_num=100", "power of two"),
        ("ceph:pool=a/b", "pool"), ("ceph:size=x", "whole number"), ("ceph:mons=1,2", "not key=value"),
    ])
    def test_bad_options_one_line(self, spec: str, words: str) -> None:
        with pytest.raises(UsageError) as exc:
            options.parse([spec])
        assert words in exc.value.message and "\n" not in exc.value.message

    def test_tags_round_trip(self) -> None:
        o = options.parse(["ceph:disk=/dev/sdb,/dev/sdc,pg_num=32,client=vm"])
        tags = options.to_tags(o)
        assert "ganeti-ceph:opt:disk:/dev/sdb+/dev/sdc" in tags and len(tags) == 3
        assert options.from_tags([*tags, "unrelated"]) == o
        assert options.to_tags(StorageOptions()) == []

    def test_resolve_defaults_from_group_size(self) -> None:
        lay = options.resolve(StorageOptions(disk=("/dev/sdb",)), NODES)
        assert lay.mons == ("n0.example", "n1.example", "n2.example") and (lay.size, lay.min_size) == (3, 2)
        one = options.resolve(StorageOptions(disk=("/dev/sdb",)), NODES[:1])
        assert one.mons == ("n2.example",) and (one.size, one.min_size) == (1, 1)

    @pytest.mark.parametrize("opts, words", [
        (StorageOptions(disk=("/d",), mons=5), "at most 3"),
        (StorageOptions(disk=("/d",), size=4), "one copy per node"),
        (StorageOptions(), "no OSD devices"), (StorageOptions(disk=("/d",), size=2, min_size=3), "above"),
    ])
    def test_resolve_refusals(self, opts: StorageOptions, words: str) -> None:
        with pytest.raises(UsageError, match=words):
            options.resolve(opts, NODES)


def test_ganeti_output_parsing() -> None:
    nodes = parse_nodes("n0.example|10.0.0.10|default|N|Y\nn1.example|10.0.0.11|store|Y|N\n")
    assert nodes[1].offline and not nodes[1].master and nodes[0].short == "n0" and nodes[1].group == "store"
    groups = parse_groups("default|['ganeti-ceph:storage', 'x:y']\nother|[]\n")
    assert groups == {"default": ["ganeti-ceph:storage", "x:y"], "other": []}


class TestPlan:
    def state(self) -> dict:
        s = distributed.new_state("default", StorageOptions(disk=("/dev/sdb",)), ("n0.example", "n1.example"))
        s.update(size=2, min_size=1)
        distributed.add_osds(s, NODES, ("/dev/sdb", "/dev/sdc"))
        return s

    def test_osd_ids_stable_and_new_nodes_get_the_next(self) -> None:
        s = self.state()
        assert [(o["id"], o["node"], o["dev"]) for o in s["osds"]][:3] == [
            ("0", "n0.example", "/dev/sdb"), ("1", "n0.example", "/dev/sdc"), ("2", "n1.example", "/dev/sdb")]
        assert distributed.add_osds(s, NODES, ("/dev/sdb", "/dev/sdc")) == []
        new = distributed.add_osds(s, [*NODES, "n3.example"], ("/dev/sdb",))
        assert [(o["id"], o["node"]) for o in new] == [("6", "n3.example")]
        assert "osd.6" in s["keys"]

    def test_conf_binds_each_daemon_to_its_node(self) -> None:
        spec = distributed.spec_of(self.state(), ADDRS)
        conf = cephconf.render_conf(spec)
        assert "mon_host = [v2:10.0.0.10:3300,v1:10.0.0.10:6789],[v2:10.0.0.11:3300,v1:10.0.0.11:6789]" in conf
        assert "[osd.5]\n\tpublic_addr = 10.0.0.12\n\tcluster_addr = 10.0.0.12\n" in conf
        assert "[mgr.n1]\n\tpublic_addr = 10.0.0.11\n" in conf
        assert "osd_crush_chooseleaf_type = 1" in conf and "mon_data =" not in conf  # Ceph's own layout
        assert "bluestore_block_create = false" in conf and "public_network" not in conf
        assert spec.data_dir("osd", "3") == "/var/lib/ceph/osd/ceph-3" and spec.conf_path == "/etc/ceph/ceph.conf"

    def test_node_requests(self) -> None:
        s = self.state()
        spec = distributed.spec_of(s, ADDRS)
        mon_node = distributed.node_request(s, spec, "n0.example", "apply")
        paths = {f["path"]: (f["mode"], f["owner"]) for f in mon_node["files"]}
        assert paths["/etc/ceph/ceph.client.admin.keyring"] == (0o600, "root")
        assert paths["/etc/ceph/ceph.conf"] == (0o644, "root")
        assert mon_node["mons"][0]["id"] == "n0" and mon_node["mgrs"][0]["id"] == "n0"
        assert [o["id"] for o in mon_node["osds"]] == ["0", "1"]
        # Each OSD carries the cluster's fsid (adoption checks the label against it), never an up_from:
        # only the osdmap, read once the mons run, may say an OSD never booted.
        assert all(o["fsid"] == s["fsid"] and "up_from" not in o for o in mon_node["osds"])
        osd_only = distributed.node_request(s, spec, "n2.example", "apply")
        assert "/etc/ceph/ceph.client.admin.keyring" not in {f["path"] for f in osd_only["files"]}
        assert "mons" not in osd_only and osd_only["daemons"] == [["osd", "4"], ["osd", "5"]]
        assert distributed.daemons_of(s, "n1.example", ("mon",)) == [["mon", "n1"]]
        imported = distributed.auth_keyring(s, spec).decode()
        assert "[osd.5]" in imported and "[mgr.n1]" in imported and "client.admin" not in imported


def test_moving_pgs() -> None:
    status = {"pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": 60},
                                         {"state_name": "active+undersized+degraded", "count": 3},
                                         {"state_name": "active+remapped+backfilling", "count": 2},
                                         {"state_name": "peering", "count": 1}]}}
    assert lifecycle.moving_pgs(status) == 3


class TestDeviceState:
    def test_states(self, tmp_path: os.PathLike) -> None:
        empty = os.path.join(tmp_path, "empty")
        with open(empty, "wb") as fh:
            fh.truncate(3 * 1024**3)
        assert node.device_state(empty, "u1") == "empty"
        with open(empty, "r+b") as fh:
            fh.write(devices.BLUESTORE_LABEL + b"u1\n")
        assert node.device_state(empty, "u1") == "ours"
        assert "another OSD" in node.device_state(empty, "u2")
        with open(empty, "r+b") as fh:
            fh.write(b"\x53\xef" + b"\0" * 64)
        assert "holds data" in node.device_state(empty, "u1")
        assert "at least" in node.device_state(_small(tmp_path), "u1")
        assert "neither" in node.device_state("/dev/null", "u1")
        assert "no such file" in node.device_state(os.path.join(tmp_path, "nope"), "u1")


def _small(tmp_path: os.PathLike) -> str:
    path = os.path.join(tmp_path, "small")
    with open(path, "wb") as fh:
        fh.truncate(100 * 1024**2)
    return path


def test_hook_env_node_modify() -> None:
    h = parse_hook_env({"GANETI_HOOKS_PATH": "node-modify", "GANETI_HOOKS_PHASE": "pre", "GANETI_OP_TARGET": "n2",
                        "GANETI_OFFLINE": "True", "GANETI_MASTER": "n0"})
    assert (h.target, h.offline) == ("n2", "True")


def test_wait_data_settled_polls_until_no_pg_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle.time, "sleep", lambda _s: None)

    class Mon:
        def __init__(self, moving: list[int]) -> None:
            self.moving = moving

        def mon_command(self, _prefix: str) -> dict:
            n = self.moving.pop(0) if len(self.moving) > 1 else self.moving[0]
            return {"pgmap": {"pgs_by_state": [{"state_name": "active+clean", "count": 8},
                                               {"state_name": "peering", "count": n}]}}

    mon = Mon([3, 1, 0])
    assert lifecycle.wait_data_settled(mon, 60) == 0  # type: ignore[arg-type]
    assert mon.moving == [0]
    assert lifecycle.wait_data_settled(Mon([2]), 0) == 2  # type: ignore[arg-type]
