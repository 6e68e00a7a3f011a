"""The pure parts of rbd-convert's `-t rbd` path: the carrier's name, the pool Ganeti fills in, the journal, and
the refusals a first run makes before its journal."""

from __future__ import annotations

import os

import pytest

from ganeti_ceph.errors import GanetiFailed
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.rbd.access_switch import Ganeti, Instance, Refused
from ganeti_ceph.rbd.convert_template import (
    Journal,
    Plan,
    Planned,
    carrier_name,
    convert,
    provider_valid,
    rbd_pool,
)


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


def test_a_journal_that_cannot_be_written_or_dropped_is_one_line(tmp_path) -> None:
    """Review S7 #4: raw OSErrors (a full or read-only disk) were tracebacks."""
    plan = Plan("a.b", "u1", "a-rbd-convert.b", "n0", "noop+default", "kvm", ())
    (tmp_path / "file").write_text("")
    with pytest.raises(GanetiFailed, match=r"cannot write the rbd-convert journal .*; nothing changed yet"):
        Journal(str(tmp_path / "file")).save(plan)
    journal = Journal(str(tmp_path))
    journal.drop("u1")  # already gone (dropped by a run before): nothing left to do
    os.mkdir(journal.path("u1"))
    with pytest.raises(GanetiFailed, match=r"the conversion is complete, but its journal .* could not be removed"):
        journal.drop("u1")


DIAGNOSE = """Provider: other
---
  Node: n0-uuid, status: valid (path: /e/other) [no parameters]
  --
Provider: rbd
---
  Node: n1-uuid, status: valid (path: /e/rbd) [parameters: access, pool]
  Node: n0-uuid, status: invalid - no such file (path: /e/rbd) [no parameters]
  --
  For nodegroup: default --> invalid
"""


@pytest.mark.parametrize(("node", "valid"), [("n1-uuid", True), ("n0-uuid", False), ("n2-uuid", False)])
def test_the_provider_is_valid_only_where_ganeti_says_so(node: str, valid: bool) -> None:
    assert provider_valid(DIAGNOSE, "rbd", node) is valid


class TemplateGaneti(Ganeti):
    """Ganeti as the `-t rbd` path's first run reads it; records what it would change."""

    def __init__(self, templates: list[str], diagnose: str = "") -> None:
        self.templates, self.diagnose, self.calls = templates, diagnose, []

    def wipes_new_disks(self) -> bool | None:
        return False

    def config(self) -> dict:
        return {"cluster": {"enabled_disk_templates": self.templates}, "instances": {
            "i": {"primary_node": "n0-uuid", "os": "noop"}}, "nodes": {"n0-uuid": {"name": "node0.x", "group": "g"}},
            "disks": {"d0": {"params": {}}}}

    def output(self, argv: list[str]) -> str:
        self.calls.append(argv)
        return self.diagnose


@pytest.mark.parametrize(("templates", "diagnose", "match"), [
    (["rbd", "plain"], DIAGNOSE, r"ext disk template is not enabled \(enabled: rbd, plain\).*"
                                 r"--enabled-disk-templates=rbd,plain,ext"),
    (["rbd", "ext"], DIAGNOSE, "no valid ExtStorage provider rbd on node0.x"),
])
def test_a_first_run_refuses_before_the_journal_when_ganeti_cannot_add_ext_disks(
        tmp_path, templates: list[str], diagnose: str, match: str) -> None:
    """Review S7 #3: Ganeti refused the carrier after the journal was written; --dry-run then said "halfway
    converted" although nothing had changed."""
    inst = Instance("a.b", "i", "ADMIN_down", False, "down", "kvm",
                    (Disk(0, "d0", "rbd", 256, "rw", None, "i.rbd.disk0", {}, "kernelspace"),))
    journal, g = Journal(str(tmp_path)), TemplateGaneti(templates, diagnose)
    with pytest.raises(Refused, match=match):
        convert(inst, g, None, False, journal)  # type: ignore[arg-type]
    assert journal.load("i") is None and all(argv[0] != "gnt-instance" for argv in g.calls)
