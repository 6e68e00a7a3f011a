"""remove's refusal while an image is watched (ganeti_ceph/rbd/remove.py), on a fake session and image.

A live watcher is "in use"; a watcher whose exact address is blocklisted is a dead client: a watch
Ceph 16 can keep forever (tracker.ceph.com/issues/58120), so the refusal names the admin's way out.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from ganeti_ceph.config import Timeouts
from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd import remove


class FakeSession:
    def __init__(self, blocklist: list[str]) -> None:
        self.blocklist = blocklist
        self.cfg = type("Cfg", (), {"timeouts": Timeouts(osd_op=0.2), "cluster": "test"})()
        self.rados = type("Rados", (), {"get_instance_id": staticmethod(lambda: 1)})()

    def errors(self, what: str) -> Any:
        return contextlib.nullcontext()

    def mon_command(self, prefix: str, **args: Any) -> Any:
        if prefix == "osd blocklist ls":
            return [{"addr": a, "until": "-"} for a in self.blocklist]
        assert prefix == "osd map" and args == {"pool": "rbd", "object": "rbd_header.abc"}
        return {"pgid": "1.2"}


class FakeImage:
    def __init__(self, addrs: list[str]) -> None:
        self.addrs = addrs

    def watchers_list(self) -> list[dict[str, Any]]:
        return [{"addr": a, "id": 7} for a in self.addrs]

    def id(self) -> str:
        return "abc"


def refusal(watching: list[str], blocklist: list[str]) -> str:
    with pytest.raises(Busy) as exc:
        remove._refuse_while_watched(FakeSession(blocklist), FakeImage(watching), "rbd", "v")
    return exc.value.message


def test_a_live_watcher_is_in_use() -> None:
    assert "is in use by 10.0.0.1:0/5 (a running VM" in refusal(["10.0.0.1:0/5"], [])


def test_a_fenced_node_is_not_a_dead_client() -> None:
    """A node's fence (ip:0/0) may be lifted: its VM's watch still means "in use"."""
    assert "is in use by 10.0.0.1:0/5" in refusal(["10.0.0.1:0/5"], ["10.0.0.1:0/0"])


def test_a_dead_clients_lasting_watch_names_the_repeer() -> None:
    msg = refusal(["10.0.0.1:0/5"], ["10.0.0.1:0/5"])
    assert "dead, blocklisted client(s) 10.0.0.1:0/5" in msg and "`ceph pg repeer 1.2`" in msg, msg


def test_live_and_dead_together_is_in_use_by_the_live_one() -> None:
    msg = refusal(["10.0.0.1:0/5", "10.0.0.2:0/9"], ["10.0.0.1:0/5"])
    assert "is in use by 10.0.0.2:0/9 (" in msg, msg


def test_nobody_watching_passes() -> None:
    remove._refuse_while_watched(FakeSession([]), FakeImage([]), "rbd", "v")
