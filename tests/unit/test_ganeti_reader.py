"""The one reader of Ganeti's state (ganeti_ceph/ganeti/): ssconf, the state dir, confd's verdict, config.data's
layout check. Pure parts; gnt-* parsing is in test_distributed_pure.py, config.data's disks in
test_access_switch.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ganeti_ceph.errors import GanetiFailed
from ganeti_ceph.ganeti import confd, config_data, parse_list, ssconf

OK, ERR = confd.OK, 1


@pytest.mark.parametrize(("answers", "needed", "want"), [
    ([(OK, False)], 1, False),
    ([(OK, True)], 1, True),
    ([(OK, False), (OK, False)], 2, False),
    ([(OK, True), (OK, True), (OK, True)], 2, True),
    ([], 1, None),  # nobody answered
    ([(OK, False)], 2, None),  # too few of the candidates asked
    ([(OK, False), (OK, True)], 2, None),  # candidates disagree (one has a stale config)
    ([(OK, False), (OK, True), (OK, False)], 2, None),
    ([(ERR, 2)], 1, None),  # the path is unknown to this confd (an older Ganeti)
    ([(OK, False), (ERR, 2)], 1, None),
    ([(OK, 0)], 1, None),  # not a boolean: never read as off
    ([(OK, None)], 1, None),
    ([(OK, "false")], 1, None),
    ([(OK, False)], 0, None),
])
def test_confd_verdict_counts_only_agreeing_boolean_answers_of_enough_candidates(answers: list, needed: int,
                                                                                want: bool | None) -> None:
    assert confd.verdict(answers, needed) is want


def test_localstatedir_is_read_from_ganetis_generated_constants() -> None:
    assert ssconf.localstatedir('# generated\nLOCALSTATEDIR = "/usr/local/var"\nX = 1\n') == "/usr/local/var"
    assert ssconf.localstatedir("LOCALSTATEDIR = some_call()\n") is None
    assert ssconf.localstatedir("this is not python (\n") is None


def test_ssconf_files(tmp_path: Path) -> None:
    (tmp_path / "ssconf_node_primary_ips").write_text("n1.example 192.0.2.10\n\nbroken\nn2.example 192.0.2.20\n")
    (tmp_path / "ssconf_master_node").write_text("n1.example\n")
    lib = str(tmp_path)
    assert ssconf.pairs(ssconf.lines("node_primary_ips", lib)) == [("n1.example", "192.0.2.10"),
                                                                    ("n2.example", "192.0.2.20")]
    assert ssconf.value("master_node", lib) == "n1.example" and ssconf.value("cluster_name", lib) is None
    assert ssconf.lines("offline_nodes", lib) == [] and not ssconf.in_cluster(lib)
    (tmp_path / "ssconf_cluster_name").write_text("c1\n")
    assert ssconf.in_cluster(lib)


def test_list_fields_are_pythons_repr() -> None:
    assert parse_list("['d1', 'd2']") == ["d1", "d2"] and parse_list("") == []


def test_config_data_load(tmp_path: Path) -> None:
    lib = str(tmp_path)
    assert config_data.load(lib) is None  # no master candidate: no config.data
    (tmp_path / "config.data").write_text('{"version": 3000000, "cluster": {"prealloc_wipe_disks": true}}')
    cfg = config_data.load(lib)
    assert cfg is not None and config_data.wipes_new_disks(cfg) is True and config_data.layout(cfg) == (3, 0)
    for text in ("not json", "[1]"):
        (tmp_path / "config.data").write_text(text)
        with pytest.raises(GanetiFailed, match=r"cannot read Ganeti's config\.data"):
            config_data.load(lib)
    with pytest.raises(GanetiFailed):
        config_data.wipes_new_disks({"cluster": [1]})


@pytest.mark.parametrize(("version", "seen"), [(2160000, "is of Ganeti 2.16"), (3010000, "is of Ganeti 3.1"),
                                               (None, "has no version"), ("3000000", "has no version")])
def test_an_unknown_config_layout_is_one_line(version: object, seen: str) -> None:
    cfg = json.loads(json.dumps({"version": version, "instances": {}, "disks": {}}))
    with pytest.raises(GanetiFailed) as err:
        config_data.instance_disks(cfg, "i-uuid", [])
    assert err.value.message == (f"Ganeti's config.data {seen}; ganeti-ceph reads disk parameters only from the "
                                 "layout of Ganeti 3.0 (ganeti_ceph/ganeti/config_data.py)")
