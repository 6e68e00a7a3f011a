"""Where a volume's image is looked for when its pool is not known (pure part): which pools, in which order."""

from __future__ import annotations

import errno

import pytest

from ganeti_ceph.errors import CephError, NotFound
from ganeti_ceph.rbd import disks
from ganeti_ceph.rbd.disks import candidate_pools

LISTING = [{"pool_name": "device_health_metrics", "application_metadata": {"mgr_devicehealth": {}}},
           {"pool_name": "rbd", "application_metadata": {"rbd": {}}},
           {"pool_name": "cephfs_data", "application_metadata": {"cephfs": {}}},
           {"pool_name": "tenant", "application_metadata": {"rbd": {}}},
           {"pool_name": "fresh", "application_metadata": {}}]


def test_only_pools_that_may_hold_rbd_images_are_probed_configured_first() -> None:
    assert candidate_pools(LISTING, "tenant") == ["tenant", "rbd", "fresh"]
    assert candidate_pools(LISTING, "gone") == ["gone", "rbd", "tenant", "fresh"]


class FakeSession:
    """Images by pool; pools this client may not read raise EPERM; every call is noted."""

    def __init__(self, images: dict[str, set[str]], denied: set[str]) -> None:
        self.images, self.denied, self.calls = images, denied, []

    def require_image(self, pool: str, image: str) -> None:
        self.calls.append(("stat", pool))
        if pool in self.denied:
            raise CephError("find image: not permitted", errno.EPERM)
        if image not in self.images.get(pool, set()):
            raise NotFound("find image: no such image")

    def mon_command(self, prefix: str, **args: object) -> list[dict]:
        self.calls.append((prefix,))
        return LISTING


@pytest.fixture()
def no_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disks, "read", lambda s, pool, volume: disks.Image(pool, {}, (), 0))


def test_the_configured_pool_is_the_one_look_when_it_holds_the_image(no_open: None) -> None:
    s = FakeSession({"tenant": {"v"}}, set())
    image, unreadable = disks.locate(s, "tenant", "v")  # type: ignore[arg-type]
    assert (image and image.pool, unreadable, s.calls) == ("tenant", [], [("stat", "tenant")])


def test_other_rbd_pools_are_looked_in_and_unreadable_ones_reported(no_open: None) -> None:
    s = FakeSession({"fresh": {"v"}}, {"rbd"})
    image, unreadable = disks.locate(s, "tenant", "v")  # type: ignore[arg-type]
    assert image is not None and image.pool == "fresh" and unreadable == ["rbd"]
    image, unreadable = disks.locate(FakeSession({}, {"rbd"}), "tenant", "v")  # type: ignore[arg-type]
    assert image is None and unreadable == ["rbd"]


def test_an_image_without_access_metadata_is_ganetis_default() -> None:
    assert disks.Image("rbd", {}, (), 0).access == "kernelspace"
    assert disks.Image("rbd", {"ganeti.access": "userspace"}, (), 0).access == "userspace"
