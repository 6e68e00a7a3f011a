"""The one builder of client.admin's Config for a deployed cluster (gnt_storage/deploy/admin.py)."""

from __future__ import annotations

import pytest

from ganeti_ceph.config import Timeouts
from ganeti_ceph.errors import GanetiCephError
from gnt_storage.deploy import admin, distributed, lifecycle, local


def test_a_directory_holds_conf_and_admin_keyring() -> None:
    cfg = admin.config("/d", "c1")
    assert (cfg.conf, cfg.keyring, cfg.client_id, cfg.cluster) == ("/d/ceph.conf", "/d/ceph.client.admin.keyring",
                                                                   "admin", "c1")
    assert cfg.timeouts == Timeouts() and admin.files("/d") == (cfg.conf, cfg.keyring)


@pytest.mark.parametrize(("wait", "osd_op"), [(0.0, 30.0), (10.0, 30.0), (300.0, 300.0)])
def test_deploy_bounds_let_an_osd_op_wait_as_long_as_the_caller(wait: float, osd_op: float) -> None:
    assert admin.timeouts(wait) == Timeouts(connect=15, mon_op=30, osd_op=osd_op)


def test_every_deployment_uses_the_builder(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert local.admin_config("/r") == admin.config("/r", "local (/r)")
    assert local.admin_config("/r", Timeouts(connect=5)).timeouts == Timeouts(connect=5)
    monkeypatch.setattr(distributed, "STATE_DIR", str(tmp_path))
    group = distributed.group_admin("g1", 120.0)
    assert group == admin.config(str(tmp_path), "storage group g1", admin.timeouts(120.0))
    with pytest.raises(GanetiCephError, match="admin keyring is missing"):
        lifecycle.admin({"group": "g1"})
    for path in admin.files(str(tmp_path)):
        (tmp_path / path).write_text("")
    assert lifecycle.admin({"group": "g1"}) == distributed.group_admin("g1")
