"""Fencing and lifting, pure parts: whose IP is fenced, the entry's form, who lifts it and with which key."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.rbd.locks import Holder
from gnt_storage.deploy import cephconf, distributed
from hooks import env, fence, main
from hooks.env import parse

RACK_A, RACK_B = "store1.rack-a.example", "store1.rack-b.example"


def test_two_nodes_sharing_a_short_name_fence_only_the_dead_ones_ip() -> None:
    """store1.rack-b died; store1.rack-a (the master, say) also has an open record: only rack-b's IP is fenced."""
    holders = [Holder(RACK_A, False, "10.0.1.5"), Holder(RACK_B, False, "10.0.2.5")]
    assert fence.fence_targets(RACK_B, holders, set()) == (["10.0.2.5"], [])
    assert fence.fence_targets("store1", holders, set()) == ([], [])  # a short name matches nobody


def test_a_record_naming_another_nodes_ip_is_not_fenced() -> None:
    holders = [Holder(RACK_B, True, "10.0.1.5"), Holder(RACK_B, True, "")]
    ips, notes = fence.fence_targets(RACK_B, holders, {"10.0.1.5"})
    assert ips == [] and "another node or of this master" in notes[0] and "no address" in notes[1]


def test_the_hook_knows_itself_by_ganetis_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ganeti's GetSysName: the normalized FQDN, not gethostname()'s short name."""
    monkeypatch.setattr(socket, "getfqdn", lambda: "Store1.Rack-B.Example.")
    monkeypatch.setattr(socket, "gethostname", lambda: "store1")
    assert env.this_node() == RACK_B


def test_a_node_with_the_masters_short_name_does_not_act_as_master() -> None:
    h = parse({"GANETI_HOOKS_PATH": "node-add", "GANETI_HOOKS_PHASE": "post", "GANETI_MASTER": RACK_A,
               "GANETI_NODE_NAME": "n9.example", "GANETI_NODE_PIP": "10.0.9.5"})

    def no_config() -> Config:
        raise AssertionError("only the master lifts fences")

    assert main.run(h, RACK_B, no_config) == 0


@pytest.mark.parametrize(("hpath", "offline", "phase", "lifts"), [
    ("node-add", "", "post", True), ("node-modify", "False", "post", True), ("node-modify", "True", "post", False),
    ("node-modify", "None", "post", False), ("node-modify", "False", "pre", False), ("node-remove", "", "post", False),
])
def test_a_fence_is_lifted_when_the_node_serves_again(hpath: str, offline: str, phase: str, lifts: bool) -> None:
    h = parse({"GANETI_HOOKS_PATH": hpath, "GANETI_HOOKS_PHASE": phase, "GANETI_OFFLINE": offline})
    assert main.back_in_service(h) is lifts


def test_the_client_key_cannot_lift_a_fence() -> None:
    """`profile rbd` may add blocklist entries (fencing), not remove them: no `osd blocklist` command cap."""
    assert cephconf.rbd_client_caps("rbd")["mon"] == "profile rbd"


def write_conf(path, fsid: str) -> str:
    path.write_text(f"[global]\n\tfsid = {fsid}\n")
    return str(path)


def test_admin_key_next_to_the_conf_of_the_same_cluster(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "STATE_DIR", str(tmp_path / "none"))
    cfg = Config(conf=write_conf(tmp_path / "ceph.conf", "f1"), keyring=str(tmp_path / "ceph.client.ganeti.keyring"),
                 client_id="ganeti")
    assert fence.admin_config(cfg) is None
    (tmp_path / "ceph.client.admin.keyring").write_text("[client.admin]\n")
    admin = fence.admin_config(cfg)
    assert admin == dataclasses.replace(cfg, keyring=str(tmp_path / "ceph.client.admin.keyring"), client_id="admin")


def test_admin_key_of_init_distributed_storage(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setattr(distributed, "STATE_DIR", str(state))
    (state / "ceph.client.admin.keyring").write_text("[client.admin]\n")
    cfg = Config(conf=write_conf(tmp_path / "ceph.conf", "f1"), keyring="k", client_id="ganeti")
    write_conf(state / "ceph.conf", "other")
    assert fence.admin_config(cfg) is None  # another cluster's admin key is never used
    write_conf(state / "ceph.conf", "f1")
    assert fence.admin_config(cfg) == dataclasses.replace(cfg, conf=str(state / "ceph.conf"),
                                                          keyring=str(state / "ceph.client.admin.keyring"),
                                                          client_id="admin")


def _dual_homed(tmp_path, monkeypatch: pytest.MonkeyPatch, answers: str) -> list[str]:
    """n1 and n2 with distinct primary (192.0.2.x) and secondary (10.0.0.x) IPs; noded answers only on the
    IPs starting with `answers`. Returns the IPs probed; a Session (the step before fencing) raises Fenced."""
    (tmp_path / "ssconf_node_primary_ips").write_text("n1.example 192.0.2.10\nn2.example 192.0.2.20\n")
    (tmp_path / "ssconf_node_secondary_ips").write_text("n1.example 10.0.0.10\nn2.example 10.0.0.20\n")
    (tmp_path / "ssconf_offline_nodes").write_text("")
    monkeypatch.setattr(fence, "SSCONF", str(tmp_path))
    probed: list[str] = []

    def reachable(ip: str, timeout: float = 3.0) -> bool:
        probed.append(ip)
        return bool(answers) and ip.startswith(answers)

    def session(cfg: Config) -> None:
        raise Fenced(probed)

    monkeypatch.setattr(fence, "reachable", reachable)
    monkeypatch.setattr(fence, "Session", session)
    return probed


class Fenced(Exception):
    """fence_if_dead went on to fence (it opened the Ceph session that blocklists)."""


FAILOVER = {"GANETI_HOOKS_PATH": "instance-failover", "GANETI_HOOKS_PHASE": "pre", "GANETI_MASTER": "n2.example",
            "GANETI_INSTANCE_NAME": "i1", "GANETI_INSTANCE_PRIMARY": "n1.example",
            "GANETI_OLD_PRIMARY": "n1.example", "GANETI_NEW_PRIMARY": "n2.example"}


def test_a_node_answering_on_its_primary_ip_is_not_fenced(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review I, R2: Ganeti reaches noded on the primary IP; the secondary network may carry only replication.
    Before the fix the hook probed the lexicographically first IP of both lists (10.0.0.10, the secondary),
    found no noded there and fenced the live n1, cutting off every Ceph client on it."""
    probed = _dual_homed(tmp_path, monkeypatch, answers="192.0.2.")
    fence.fence_if_dead(parse(FAILOVER), Config(conf=str(tmp_path / "ceph.conf"), keyring=str(tmp_path / "k")))
    assert probed == ["192.0.2.10"]


def test_a_node_silent_on_its_primary_ip_is_fenced_even_if_its_secondary_answers(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ganeti cannot reach it either: its failover goes ahead, so the old primary must lose its Ceph access."""
    probed = _dual_homed(tmp_path, monkeypatch, answers="10.0.0.")
    with pytest.raises(Fenced):
        fence.fence_if_dead(parse(FAILOVER), Config(conf=str(tmp_path / "ceph.conf"), keyring=str(tmp_path / "k")))
    assert probed == ["192.0.2.10"]
