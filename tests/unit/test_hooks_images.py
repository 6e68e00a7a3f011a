"""The hook's veto for a disk only in pools it may not read (where it looks: test_disks.py)."""

from __future__ import annotations

from ganeti_ceph.config import Config
from hooks.env import Disk
from hooks.images import unreadable_veto


def test_a_disk_only_in_pools_we_may_not_read_is_one_line_naming_pool_and_cap() -> None:
    cfg = Config(conf="c", keyring="k", client_id="ganeti")
    msg = unreadable_veto(cfg, Disk(0, "rbd", "u1.ext.disk0", 64), ["tenant"]).message
    assert "\n" not in msg and "disk 0 (u1.ext.disk0)" in msg and "pool(s) tenant" in msg
    assert "profile rbd pool=<that pool>" in msg and "client.ganeti" in msg
