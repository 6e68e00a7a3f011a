"""Pure parts of the storage node operations: a dead node, a drain past its bound, maintenance (noout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti import GNode, parse_nodes
from ganeti_ceph.rbd import mappers
from gnt_storage import deploy
from gnt_storage.deploy import cephconf, cluster_options, distributed, lifecycle, node, options, teardown, volume
from hooks import checks
from hooks import main as hook_main
from hooks.env import parse as parse_hook_env


def test_up_osds_reads_the_osdmap() -> None:
    dump = {"osds": [{"osd": 0, "up": 1}, {"osd": 1, "up": 0}, {"osd": 2, "up": 1}]}
    assert lifecycle.up_osds(dump, ["1", "2", "7"]) == ["2"]
    assert lifecycle.up_osds({}, ["0"]) == []


def test_drain_past_its_bound_says_what_to_do() -> None:
    refused = lifecycle.drain_verdict("n2.t", 5, 540, ok_to_stop=False)
    assert "\n" not in refused and "5 PG(s) still moving after 540 s" in refused
    assert "OSDs stay out" in refused and "gnt-node modify --offline yes n2.t again" in refused
    going = lifecycle.drain_verdict("n2", 5, 540, ok_to_stop=True)
    assert "\n" not in going and "stopping them" in going


def test_hook_env_reads_drained() -> None:
    h = parse_hook_env({"GANETI_HOOKS_PATH": "node-modify", "GANETI_HOOKS_PHASE": "post", "GANETI_OP_TARGET": "n2",
                        "GANETI_OFFLINE": "None", "GANETI_DRAINED": "True", "GANETI_MASTER": "n0"})
    assert (h.offline, h.drained) == ("None", "True")


@pytest.mark.parametrize("phase, offline, drained, want", [
    ("post", "None", "True", [("maintenance", "n2", True)]),
    ("post", "None", "False", [("maintenance", "n2", False)]),
    ("pre", "None", "True", []),  # noout only once Ganeti has drained the node
    ("post", "False", "None", [("online", "n2")]),
    ("post", "None", "None", []),
])
def test_node_modify_maps_to_ceph(monkeypatch: pytest.MonkeyPatch, phase: str, offline: str, drained: str,
                                  want: list[tuple]) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(deploy, "storage_group_kept", lambda: True)
    monkeypatch.setattr(deploy, "node_maintenance", lambda name, on: calls.append(("maintenance", name, on)))
    monkeypatch.setattr(deploy, "node_online", lambda name: calls.append(("online", name)))
    monkeypatch.setattr(deploy, "node_offline", lambda name, drain_timeout: calls.append(("offline", name)))
    h = parse_hook_env({"GANETI_HOOKS_PATH": "node-modify", "GANETI_HOOKS_PHASE": phase, "GANETI_OP_TARGET": "n2",
                        "GANETI_OFFLINE": offline, "GANETI_DRAINED": drained, "GANETI_MASTER": "n0"})
    hook_main.storage_node_hook(h, 600)
    assert calls == want


# -- networks: public = Ganeti's primary IPs, cluster = its secondary network ------------------------------

def gnodes(*pairs: tuple[str, str]) -> list[GNode]:
    return [GNode(f"n{i}.t", pip, "default", False, i == 0, sip) for i, (pip, sip) in enumerate(pairs)]


def test_covering_network() -> None:
    assert distributed.covering(["10.1.0.3", "10.1.0.9"]) == "10.1.0.0/28"
    assert distributed.covering(["10.1.0.3"]) == "10.1.0.3/32"


def test_no_secondary_network_no_cluster_network() -> None:
    nets = distributed.networks(gnodes(("10.0.0.1", "10.0.0.1"), ("10.0.0.2", "10.0.0.2")), "")
    assert nets == distributed.Networks(public="10.0.0.0/30")


def test_cluster_network_defaults_to_ganeti_secondary() -> None:
    nets = distributed.networks(gnodes(("10.0.0.1", "192.168.5.1"), ("10.0.0.2", "192.168.5.2")), "")
    assert nets.cluster == "192.168.5.0/30"
    assert dict(nets.cluster_addrs) == {"n0.t": "192.168.5.1", "n1.t": "192.168.5.2"}


def test_given_cluster_network_picks_each_nodes_address_in_it() -> None:
    nets = distributed.networks(gnodes(("10.0.0.1", "192.168.5.1"), ("10.0.0.2", "10.0.0.2")), "10.0.0.0/24")
    assert dict(nets.cluster_addrs) == {"n0.t": "10.0.0.1", "n1.t": "10.0.0.2"}
    with pytest.raises(UsageError) as exc:
        distributed.networks(gnodes(("10.0.0.1", "10.0.0.1")), "172.16.0.0/16")
    assert "n0.t has no Ganeti address in ceph:cluster_network=172.16.0.0/16" in exc.value.message
    assert "\n" not in exc.value.message


@pytest.mark.parametrize("value", ["10.0.0.1/24", "10.0.0.0/33", "net"])
def test_bad_cluster_network_one_line(value: str) -> None:
    with pytest.raises(UsageError, match="CIDR"):
        options.parse([f"ceph:cluster_network={value}"])
    assert options.parse(["ceph:cluster_network=10.9.0.0/16"]).cluster_network == "10.9.0.0/16"


def test_conf_binds_osds_to_the_cluster_network() -> None:
    state = {"group": "g", "fsid": "f" * 8, "mons": ["n0.t"], "keys": {},
             "options": {"disk": ["/dev/sdb"], "pool": "rbd", "client": "ganeti"},
             "osds": [{"id": "0", "node": "n0.t", "dev": "/dev/sdb", "uuid": "u"},
                      {"id": "1", "node": "n1.t", "dev": "/dev/sdb", "uuid": "v"}]}
    nodes = gnodes(("10.0.0.1", "192.168.5.1"), ("10.0.0.2", "192.168.5.2"))
    conf = cephconf.render_conf(distributed.spec_of(state, {g.name: g.pip for g in nodes},
                                                    distributed.networks(nodes, "")))
    assert "cluster_network = 192.168.5.0/30" in conf and "public_network = 10.0.0.0/30" in conf
    assert "[osd.1]\n\tpublic_addr = 10.0.0.2\n\tcluster_addr = 192.168.5.2\n" in conf
    assert "[mgr.n0]\n\tpublic_addr = 10.0.0.1\n" in conf


def test_nodes_read_with_their_secondary_ip() -> None:
    nodes = parse_nodes("n0.t|10.0.0.1|default|N|Y|192.168.5.1\nn1.t|10.0.0.2|default|N|N\n")
    assert [(n.pip, n.sip) for n in nodes] == [("10.0.0.1", "192.168.5.1"), ("10.0.0.2", "10.0.0.2")]


# -- krbd beside OSDs: a storage node defaults to a userspace-backed mapper, the start check warns ----------

def test_a_node_with_osds_does_not_default_to_krbd(monkeypatch: pytest.MonkeyPatch) -> None:
    for cls in mappers.MAPPERS.values():  # a host where every mapper could run
        monkeypatch.setattr(cls, "available", classmethod(lambda c: True))
    cfg = {"keyring": "/etc/ceph/ceph.client.ganeti.keyring", "client": "ganeti", "pool": "rbd", "cluster": "c"}
    assert "mapper: krbd" in node.provider_config({**cfg, "osds": False}, "n0.t")
    assert "mapper: rbd-nbd" in node.provider_config({**cfg, "osds": True}, "n0.t")


def test_start_check_warns_of_krbd_beside_osds(tmp_path: Path) -> None:
    probe = checks.Probe(root=str(tmp_path))
    krbd = Config(conf="/c", keyring="/k", mapper="krbd")
    assert checks.krbd_beside_osds(krbd, probe) == []  # no OSD here
    (tmp_path / "var/lib/ceph/osd/ceph-3").mkdir(parents=True)
    (line,) = checks.krbd_beside_osds(krbd, probe)
    assert line.startswith("warning: krbd on a node that runs Ceph OSDs (ceph-3)") and "rbd-nbd" in line
    assert checks.krbd_beside_osds(Config(conf="/c", keyring="/k", mapper="rbd-nbd"), probe) == []


# -- remove-distributed-storage: refusals and what each node gets ------------------------------------------

def test_removal_refused_while_images_or_foreign_pools_live_there() -> None:
    assert teardown.images_verdict("g", "rbd", {"rbd": [], "device_health_metrics": []}) is None
    held = teardown.images_verdict("g", "rbd", {"rbd": ["vol-a", "vol-b (in the trash)"]})
    assert held is not None and "\n" not in held and "holds 2 RBD image(s) (e.g. rbd/vol-a)" in held
    foreign = teardown.images_verdict("g", "rbd", {"rbd": [], "cephfs_data": []})
    assert foreign is not None and "cephfs_data" in foreign and "ceph osd pool rm" in foreign


def test_group_tags_of_the_storage_cluster() -> None:
    assert teardown.group_tags(["ganeti-ceph:storage", "ganeti-ceph:fsid:f1", "other"]) == [
        "ganeti-ceph:storage", "ganeti-ceph:fsid:f1"]


def test_purge_request_names_only_what_we_made() -> None:
    state = {"group": "g", "mons": ["n0.t"], "options": {"client": "vm", "pool": "rbd"},
             "osds": [{"id": "0", "node": "n0.t", "dev": "/dev/sdb", "uuid": "u"},
                      {"id": "1", "node": "n1.t", "dev": "/dev/sdb", "uuid": "v"}]}
    req = teardown.purge_request(state, "n0.t")
    assert req["daemons"] == [["mon", "n0"], ["mgr", "n0"], ["osd", "0"]]
    assert [o["id"] for o in req["osds"]] == ["0"]
    assert req["dirs"] == ["/var/lib/ceph/mon/ceph-n0", "/var/lib/ceph/mgr/ceph-n0", "/var/lib/ceph/osd/ceph-0"]
    assert "/etc/ceph/ceph.client.vm.keyring" in req["files"] and "/etc/ganeti/ceph.yaml" in req["files"]
    assert teardown.purge_request(state, "n1.t")["dirs"] == ["/var/lib/ceph/osd/ceph-1"]


def test_purge_of_a_ceph_volume_osd_takes_its_dropin_and_bootstrap_keyring() -> None:
    osd = {"id": "4", "node": "n1.t", "dev": "/srv/f", "uuid": "u"}
    state = {"group": "g", "mons": [], "options": {"client": "ganeti", "pool": "rbd"}, "osds": [osd]}
    assert not any("ganeti-ceph-volume.conf" in f for f in teardown.purge_request(state, "n1.t")["files"])
    state["osds"] = [{**osd, "volume": {"stable": "/dev/disk/by-id/x"}}]  # as volume.merge records it
    assert volume.made_by_ceph_volume(state) == {"4"}
    files = teardown.purge_request(state, "n1.t")["files"]
    assert volume.DROPIN.format("4") in files and volume.BOOTSTRAP_KEYRING in files


def test_options_show_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    class Tags:  # what `gnt-cluster list-tags` gave: only the parsing and printing are under test here
        def cluster_tags(self) -> list[str]:
            return ["ganeti-ceph:opt:pg_num:32", "ganeti-ceph:opt:cluster_network:10.9.0.0/16"]

    assert cluster_options.show(Tags()) == 0  # type: ignore[arg-type]
    out = capsys.readouterr().out.splitlines()
    assert "ceph:pg_num=32" in out and "ceph:cluster_network=10.9.0.0/16" in out and "ceph:disk=" in out
    assert "ceph:mons=(from the group's size)" in out
