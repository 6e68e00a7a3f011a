"""The pure parts of rbd-convert's `-t rbd` path: the carrier's name, the pool Ganeti fills in, the journal."""

from __future__ import annotations

import pytest

from ganeti_ceph.errors import GanetiFailed
from ganeti_ceph.rbd.convert_template import Journal, Plan, Planned, carrier_name, rbd_pool


def test_the_carrier_sits_in_the_instance_domain() -> None:
    assert carrier_name("web1.example.org") == "web1-rbd-convert.example.org"
    assert carrier_name("web1") == "web1-rbd-convert"


def cfg(disk: dict, group: dict, cluster: dict) -> dict:
    return {"instances": {"i": {"primary_node": "n"}}, "nodes": {"n": {"group": "g"}},
            "nodegroups": {"g": {"diskparams": {"rbd": group}}}, "cluster": {"diskparams": {"rbd": cluster}}}


@pytest.mark.parametrize(("disk", "group", "cluster", "pool"), [
    ({"pool": "d"}, {"pool": "g"}, {"pool": "c"}, "d"),
    ({}, {"pool": "g"}, {"pool": "c"}, "g"),
    ({}, {}, {"pool": "c"}, "c"),
    ({}, {}, {}, "rbd"),
])
def test_the_pool_is_the_disk_s_else_the_group_s_else_the_cluster_s(disk: dict, group: dict, cluster: dict,
                                                                      pool: str) -> None:
    assert rbd_pool(cfg(disk, group, cluster), "i", {"params": disk}) == pool


def test_the_journal_keeps_the_plan_until_dropped(tmp_path: object) -> None:
    journal = Journal(str(tmp_path))
    plan = Plan("a.b", "u1", "a-rbd-convert.b", "n0", "noop+default", "kvm",
                (Planned("d0", "root", "rw", 256, "rbd", "u1.rbd.disk0", "userspace"),
                 Planned("d1", None, "ro", 64, "rbd", "u1.rbd.disk1", "kernelspace")))
    assert journal.load("u1") is None
    journal.save(plan)
    assert journal.load("u1") == plan
    journal.drop("u1")
    assert journal.load("u1") is None


def test_a_damaged_journal_fails_in_one_line(tmp_path: object) -> None:
    journal = Journal(str(tmp_path))
    with open(journal.path("u1"), "w") as fh:
        fh.write("{")
    with pytest.raises(GanetiFailed, match="cannot read the rbd-convert journal"):
        journal.load("u1")
