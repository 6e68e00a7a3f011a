"""remove-distributed-storage's guards and gnt-node remove's forget, in the parts that need no cluster.

Ganeti and Ceph are stand-ins here, each answering as the real one does in
the case tested: what is tested is what we do with the answer (which state
is saved, which line refuses). The real commands run on the storage bed
(tests/storage/test_distributed.py: TestRemoval).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ganeti_ceph.errors import CephError, UsageError
from gnt_storage.deploy import distributed, lifecycle, teardown
from gnt_storage.deploy.options import FSID_TAG_PREFIX, STORAGE_TAG


class Ganeti:
    """Ganeti with one group, G, whose tags are `tags`; records tag removals."""

    def __init__(self, tags: list[str]) -> None:
        self.tags, self.removed = tags, []

    def require_group(self, group: str) -> dict[str, list[str]]:
        return {group: list(self.tags)}

    def remove_group_tags(self, group: str, tags: list[str]) -> None:
        self.removed += tags


def test_a_master_without_the_state_of_a_made_cluster_refuses_and_keeps_the_tags(monkeypatch) -> None:
    """After a failover to a master outside the group: Ceph runs on, so nothing may be forgotten here."""
    monkeypatch.setattr(distributed, "load_state", lambda: None)
    ganeti = Ganeti([STORAGE_TAG, f"{FSID_TAG_PREFIX}f00d"])
    with pytest.raises(UsageError) as exc:
        teardown.remove("G", ganeti=ganeti)  # type: ignore[arg-type]
    assert exc.value.message == (
        f"node group G holds storage cluster f00d but this master lacks {distributed.STATE}: copy it from a node "
        "of group G (same path) and run this again; nothing was changed")
    assert ganeti.removed == []


def test_a_group_only_marked_loses_its_mark(monkeypatch) -> None:
    """No fsid tag: no cluster was ever made (an empty group was only marked)."""
    monkeypatch.setattr(distributed, "load_state", lambda: None)
    ganeti = Ganeti([STORAGE_TAG])
    assert teardown.remove("G", ganeti=ganeti) == 0  # type: ignore[arg-type]
    assert ganeti.removed == [STORAGE_TAG]


def test_unavailable_node_advice_can_be_followed() -> None:
    offline = teardown.unavailable_verdict("G", "n2.t", True)
    assert "gnt-node modify --offline no n2.t" in offline and "--readd" not in offline
    gone = teardown.unavailable_verdict("G", "n2.t", False)
    assert "Ganeti no longer has" in gone and "gnt-node add n2.t" in gone
    assert "--readd" not in gone and "gnt-node remove" not in gone


class Session:
    """Ceph's answers to forget: osd.2 is not safe to destroy; purging osd.3 fails (a mgr restart)."""

    def __init__(self, cfg: Any) -> None:
        pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def mon_command(self, prefix: str, **args: Any) -> None:
        assert prefix == "mon remove"

    def mgr_command(self, prefix: str, **args: Any) -> None:
        if prefix == "osd safe-to-destroy" and args["ids"] == ["2"]:
            raise CephError("osd.2 is not safe to destroy")
        if prefix == "osd purge" and args["id"] == 3:
            raise CephError("mgr went away")


@pytest.fixture
def state_file(tmp_path, monkeypatch) -> str:
    path = str(tmp_path / "storage.json")
    state = {"group": "G", "mons": ["n1.t", "n2.t", "n3.t"], "keys": {"osd.1": "k", "osd.2": "k", "osd.3": "k"},
             "osds": [{"id": i, "node": "n2.t"} for i in ("1", "2", "3")]}
    save, load = distributed.save_state, distributed.load_state
    save(state, path)
    monkeypatch.setattr(distributed, "load_state", lambda: load(path))
    monkeypatch.setattr(distributed, "save_state", lambda st: save(st, path))
    monkeypatch.setattr(lifecycle, "Session", Session)
    monkeypatch.setattr(lifecycle, "admin", lambda state: None)
    return path


def test_forget_keeps_each_step_done_when_a_later_one_fails(state_file: str) -> None:
    with pytest.raises(CephError, match="mgr went away"):
        lifecycle.forget("n2.t")
    with open(state_file) as fh:
        state = json.load(fh)
    assert state["mons"] == ["n1.t", "n3.t"]  # the mon left the monmap: saved although osd.3 failed
    assert [o["id"] for o in state["osds"]] == ["2", "3"]
    assert "osd.1" not in state["keys"]


def test_remove_tries_again_to_forget_nodes_ganeti_no_longer_has(state_file: str) -> None:
    state = distributed.load_state()
    left = teardown.forget_removed(state, {"n1.t", "n3.t"})
    assert [o["id"] for o in left["osds"]] == ["2", "3"]
    assert teardown.forget_removed(left, {"n1.t", "n2.t", "n3.t"}) is left  # nobody gone: Ceph not asked
