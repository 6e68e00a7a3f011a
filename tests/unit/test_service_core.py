"""The volume service's pure parts: no Ceph, no session ever opened.

A session source that fails the test if called proves which refusals come
before anything touches Ceph (bad input = one line, no change).
"""

from __future__ import annotations

import dataclasses

import pytest

from ganeti_ceph.config import Config
from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import prealloc_wipe, volumes
from ganeti_ceph.rbd.catalogue import Backend, Catalogue
from ganeti_ceph.rbd.service import VolumeRef, VolumeService, VolumeSpec, metadata

VOL = "3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0"
CFG = Config(conf="/nonexistent/ceph.conf", keyring="/nonexistent/keyring", cluster="far", pool="vols")


class Touched(Exception):
    """A session was asked for."""


def no_sessions(_cfg: Config) -> object:
    raise Touched


def service(**changes: object) -> VolumeService:
    changes.setdefault("catalogue", "/nonexistent/backends.yaml")
    return VolumeService(dataclasses.replace(CFG, **changes), no_sessions)  # type: ignore[arg-type]


def test_without_a_catalogue_file_the_one_backend_is_the_configs() -> None:
    cat = Catalogue.of(CFG)
    assert cat.backend == Backend("default", "vols", overcommit=0.0) and not cat.declared
    assert cat.backend.config(CFG) == CFG
    assert cat.backend_of("other") is cat.backend
    assert (cat.pool(""), cat.pool("fast")) == ("vols", "fast")


def test_a_ref_without_pool_resolves_to_the_default_pool() -> None:
    svc = service(catalogue="/nonexistent/backends.yaml")
    assert svc.resolve(VolumeRef("", VOL, "u1")) == VolumeRef("vols", VOL, "u1", "default")
    assert svc.resolve(VolumeRef("fast", VOL)) == VolumeRef("fast", VOL, None, "default")


def test_building_the_service_touches_nothing() -> None:
    svc = service(catalogue="/nonexistent/backends.yaml")
    assert svc.cfg.cluster == "far" and svc.catalogue.backend.config(svc.cfg).cluster == "far"


def test_metadata_of_a_new_volume() -> None:
    spec = VolumeSpec(VolumeRef("vols", VOL, "u1"), 64, "userspace", cname="disk-a")
    assert metadata(spec) == {volumes.META_ACCESS: "userspace", volumes.META_UUID: "u1",
                              volumes.META_CNAME: "disk-a"}
    assert metadata(VolumeSpec(VolumeRef("vols", VOL), 64)) == {volumes.META_ACCESS: "kernelspace"}


def test_journaling_is_refused_for_krbd_before_ceph() -> None:
    spec = VolumeSpec(VolumeRef("", VOL), 64, "kernelspace", (*volumes.DEFAULT_FEATURES, "journaling"))
    with pytest.raises(UsageError, match="journaling is not supported by krbd"):
        service(mapper="krbd").create(spec)
    for svc, access in ((service(mapper="rbd-nbd"), "kernelspace"), (service(mapper="krbd"), "userspace")):
        with pytest.raises(Touched):  # allowed: goes on to Ceph
            svc.create(dataclasses.replace(spec, access=access))


def test_a_bad_origin_is_refused_before_ceph() -> None:
    with pytest.raises(UsageError, match="invalid origin"):
        service().create(VolumeSpec(VolumeRef("", VOL), 64, origin="a/b/c@"))


@pytest.mark.parametrize(("change", "what"), [
    ({"adopt_image": "old-disk"}, "the adopted image vols/old-disk"),
    ({"origin": "tmpl@gold"}, "this clone of vols/tmpl@gold"),
    ({"origin": "gold/tmpl"}, "this clone of gold/tmpl"),
])
def test_adopt_and_clone_ask_about_ganetis_wipe_first(monkeypatch: pytest.MonkeyPatch, change: dict[str, str],
                                                      what: str) -> None:
    asked: list[str] = []

    def refuse(text: str) -> None:
        asked.append(text)
        raise UsageError("wiped")

    monkeypatch.setattr(prealloc_wipe, "refuse_if_wiped", refuse)
    with pytest.raises(UsageError, match="wiped"):
        service().create(VolumeSpec(VolumeRef("", VOL), 64, **change))  # type: ignore[arg-type]
    assert asked == [what]


def test_a_plain_create_does_not_ask_about_the_wipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prealloc_wipe, "refuse_if_wiped", lambda _what: pytest.fail("asked"))
    with pytest.raises(Touched):
        service().create(VolumeSpec(VolumeRef("", VOL), 64))


def test_switch_access_is_the_access_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    from ganeti_ceph.rbd import access_switch

    seen: list[tuple] = []
    monkeypatch.setattr(access_switch, "switch", lambda *a, **kw: seen.append((a, kw)) or 0)
    assert service().switch_access("inst1", "userspace", dry_run=True) == 0
    assert seen == [(("inst1", "userspace"), {"dry_run": True})]
