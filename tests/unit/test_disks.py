"""Where a volume's image is looked for when its pool is not known (pure part): which pools, in which order."""

from __future__ import annotations

from ganeti_ceph.rbd.disks import candidate_pools

LISTING = [{"pool_name": "device_health_metrics", "application_metadata": {"mgr_devicehealth": {}}},
           {"pool_name": "rbd", "application_metadata": {"rbd": {}}},
           {"pool_name": "cephfs_data", "application_metadata": {"cephfs": {}}},
           {"pool_name": "tenant", "application_metadata": {"rbd": {}}},
           {"pool_name": "fresh", "application_metadata": {}}]


def test_only_pools_that_may_hold_rbd_images_are_probed_configured_first() -> None:
    assert candidate_pools(LISTING, "tenant") == ["tenant", "rbd", "fresh"]
    assert candidate_pools(LISTING, "gone") == ["gone", "rbd", "tenant", "fresh"]
