"""Where the hook looks for a disk's image (pure parts): which pools, and the veto for pools it may not read."""

from __future__ import annotations

from ganeti_ceph.config import Config
from hooks.env import Disk
from hooks.images import candidate_pools, unreadable_veto

LISTING = [{"pool_name": "device_health_metrics", "application_metadata": {"mgr_devicehealth": {}}},
           {"pool_name": "rbd", "application_metadata": {"rbd": {}}},
           {"pool_name": "cephfs_data", "application_metadata": {"cephfs": {}}},
           {"pool_name": "tenant", "application_metadata": {"rbd": {}}},
           {"pool_name": "fresh", "application_metadata": {}}]


def test_only_pools_that_may_hold_rbd_images_are_probed_configured_first() -> None:
    assert candidate_pools(LISTING, "tenant") == ["tenant", "rbd", "fresh"]
    assert candidate_pools(LISTING, "gone") == ["gone", "rbd", "tenant", "fresh"]


def test_a_disk_only_in_pools_we_may_not_read_is_one_line_naming_pool_and_cap() -> None:
    cfg = Config(conf="c", keyring="k", client_id="ganeti")
    msg = unreadable_veto(cfg, Disk(0, "rbd", "u1.ext.disk0", 64), ["tenant"]).message
    assert "\n" not in msg and "disk 0 (u1.ext.disk0)" in msg and "pool(s) tenant" in msg
    assert "profile rbd pool=<that pool>" in msg and "client.ganeti" in msg
