"""gnt_storage.deploy's API for the hooks: each step finds the node in Ganeti and calls its lifecycle step."""

from __future__ import annotations

import pytest

import ganeti_ceph.ganeti
from gnt_storage import deploy
from gnt_storage.deploy import distributed, lifecycle, state_lock


class FakeGaneti:
    pass


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path) -> list[tuple]:
    out: list[tuple] = []
    monkeypatch.setattr(state_lock, "PATH", str(tmp_path / ".lock"))
    monkeypatch.setattr(ganeti_ceph.ganeti, "Ganeti", FakeGaneti)
    monkeypatch.setattr(lifecycle, "find", lambda ganeti, name: (type(ganeti).__name__, name))
    monkeypatch.setattr(lifecycle, "offline", lambda node, ganeti, drain_timeout: out.append(("offline", node,
                                                                                              drain_timeout)))
    monkeypatch.setattr(lifecycle, "online", lambda node, ganeti: out.append(("online", node)))
    monkeypatch.setattr(lifecycle, "refuse_remove", lambda node: out.append(("refuse_remove", node)))
    monkeypatch.setattr(lifecycle, "forget", lambda name: out.append(("forget", name)))
    return out


def test_each_step_reaches_its_lifecycle_function(calls: list[tuple]) -> None:
    deploy.node_offline("n1.t", drain_timeout=5.0)
    deploy.node_online("n1.t")
    deploy.refuse_node_remove("n1.t")
    deploy.forget_node("n1.t")
    node = ("FakeGaneti", "n1.t")
    assert 0 < calls[0][2] <= 5.0  # the drain's bound, less any wait for the state lock
    assert calls == [("offline", node, calls[0][2]), ("online", node), ("refuse_remove", node), ("forget", "n1.t")]


def test_a_storage_group_is_kept_when_the_master_has_its_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "load_state", lambda: None)
    assert not deploy.storage_group_kept()
    monkeypatch.setattr(distributed, "load_state", lambda: {"group": "default"})
    assert deploy.storage_group_kept()


def test_the_admin_files_are_where_init_distributed_storage_keeps_them() -> None:
    conf, keyring = deploy.admin_files()
    assert conf.startswith(distributed.STATE_DIR) and keyring.endswith("ceph.client.admin.keyring")
