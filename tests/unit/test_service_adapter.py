"""The provider as an adapter: Ganeti's environment to the service's input, its results to Ganeti's output.

A stand-in service returns canned results, so the exact text Ganeti sees
is checked without Ceph (the Ceph tests check it end to end).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from extstorage import provider, request
from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import volumes
from ganeti_ceph.rbd.service import Attachment, Closed, Created, Grown, Guard, VolumeRef, VolumeSpec

VOL = "3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0"


def req(action: str, **extra: str) -> request.Request:
    env = {"VOL_NAME": VOL, "EXTP_PROVIDER": "rbd", "EXTP_POOL": "fast", **extra}
    return request.parse(action, env, "rbd")


@dataclass
class Canned:
    """Answers each call with `result`, remembering what it was asked."""

    result: object = None
    calls: list[tuple] = field(default_factory=list)

    def __getattr__(self, name: str) -> object:
        def call(*args: object) -> object:
            self.calls.append((name, *args))
            return self.result
        return call


def test_request_to_ref_and_spec() -> None:
    r = req("create", VOL_SIZE="64", VOL_UUID="u1", VOL_CNAME="d", EXTP_ACCESS="userspace",
            EXTP_FEATURES="layering+exclusive-lock", EXTP_DATA_POOL="ec", EXTP_ORIGIN="t@s")
    assert r.ref == VolumeRef("fast", VOL, "u1")
    assert r.spec() == VolumeSpec(VolumeRef("fast", VOL, "u1"), 64, "userspace", ("layering", "exclusive-lock"),
                                  "ec", "t@s", None, "d")
    assert req("verify").spec().features == volumes.DEFAULT_FEATURES


def test_bad_features_are_refused_in_the_spec() -> None:
    with pytest.raises(UsageError, match="unknown image feature"):
        req("create", VOL_SIZE="64", EXTP_FEATURES="warp").spec()


@pytest.mark.parametrize(("result", "note"), [
    (Created(True), f"fast/{VOL} created"),
    (Created(False), f"fast/{VOL} already exists (same volume)"),
    (Created(True, adopted_from="fast/old"), f"fast/{VOL} adopted from fast/old"),
    (Created(True, cloned_from=volumes.ImageRef("fast", "t", "s")), f"fast/{VOL} cloned from fast/t@s"),
])
def test_create_notes(result: Created, note: str) -> None:
    assert provider.do_create(Canned(result), req("create", VOL_SIZE="64")) == ("", note)  # type: ignore[arg-type]


def test_attach_prints_device_then_uri() -> None:
    svc = Canned(Attachment("/dev/loop3", "rbd:fast/x:id=c"))
    assert provider.do_attach(svc, req("attach")) == ("/dev/loop3\nkvm:rbd:fast/x:id=c\n", "")  # type: ignore[arg-type]
    assert svc.calls == [("attach", VolumeRef("fast", VOL), "kernelspace")]
    userspace = Canned(Attachment("", "rbd:fast/x"))
    assert provider.do_attach(userspace, req("attach")) == ("\nkvm:rbd:fast/x\n", "")  # type: ignore[arg-type]


@pytest.mark.parametrize(("action", "extra", "result", "note"), [
    ("detach", {}, True, "unmapped"),
    ("detach", {}, False, "was not mapped on this node"),
    ("remove", {}, True, "removed"),
    ("remove", {}, False, "was already gone"),
    ("grow", {"VOL_SIZE": "1", "VOL_NEW_SIZE": "2"}, Grown(2, None), "is 2 MiB"),
    ("grow", {"VOL_SIZE": "1", "VOL_NEW_SIZE": "2"}, Grown(2, "/dev/loop3"), "is 2 MiB (/dev/loop3 resized)"),
    ("setinfo", {"VOL_METADATA": "m"}, None, "metadata set"),
    ("open", {}, "opened exclusively", "opened exclusively"),
    ("close", {}, Closed(True, None), "closed"),
    ("close", {}, Closed(False, Guard("/dev/loop3", 330.4)),
     "was not open on this node; /dev/loop3 is unmapped unless an open follows within 330 s"),
])
def test_notes(action: str, extra: dict[str, str], result: object, note: str) -> None:
    out = provider.HANDLERS[action](Canned(result), req(action, **extra))  # type: ignore[arg-type]
    assert out == ("", f"fast/{VOL} {note}")


def test_snapshot_and_verify_notes() -> None:
    snap = req("snapshot", VOL_SNAPSHOT_NAME=VOL + ".snap")
    assert provider.do_snapshot(Canned(True), snap) == ("", f"fast/{VOL}.snap made")  # type: ignore[arg-type]
    assert provider.do_snapshot(Canned(False), snap) == ("", f"fast/{VOL}.snap already exists")  # type: ignore[arg-type]
    verified = Canned("far")
    assert provider.do_verify(verified, req("verify")) == ("", "parameters and cluster far OK")  # type: ignore[arg-type]
