"""`local-cluster up --mons 3`: the three-mon cluster the collector's quorum tests run on."""

from __future__ import annotations

import pytest

from ganeti_ceph.errors import UsageError
from gnt_storage.deploy import local
from gnt_storage.deploy.cephconf import render_conf
from tests.conftest import gnt_storage


def test_three_mons_on_one_address_with_ports_of_their_own() -> None:
    spec = local.spec_for(local.Options(dir="/tmp/x", port=13700, mons=3), "f")
    assert [(m.id, m.port_v2, m.port_v1) for m in spec.mons] == [("a", 13700, 13701), ("b", 13702, 13703),
                                                                  ("c", 13704, 13705)]
    assert spec.port_min == 13706 and spec.port_max == 13799
    conf = render_conf(spec)
    assert "mon_host = [v2:127.0.0.1:13700,v1:127.0.0.1:13701],[v2:127.0.0.1:13702," in conf
    assert "mon_initial_members = a,b,c" in conf
    assert [d.name for d in local.daemon_list(2, 3)] == ["mon.a", "mon.b", "mon.c", "mgr.x", "osd.0", "osd.1"]


def test_one_mon_stays_as_it_was() -> None:
    spec = local.spec_for(local.Options(dir="/tmp/x", port=13300), "f")
    assert [(m.id, m.port_v2, m.port_v1) for m in spec.mons] == [("a", 13300, 13301)] and spec.port_min == 13302
    assert [d.name for d in local.daemon_list(1)] == ["mon.a", "mgr.x", "osd.0"]


def test_only_one_or_three_mons(tmp_path) -> None:
    with pytest.raises(UsageError, match="use 1 or 3"):
        local.up(local.Options(dir=str(tmp_path), mons=2))
    res = gnt_storage("local-cluster", "up", "--dir", str(tmp_path), "--mons", "2")
    assert res.returncode == 2 and "--mons" in res.stderr
