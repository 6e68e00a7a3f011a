"""create with adopt_image= when an earlier adopt was interrupted, through the real provider on real Ceph.

An adopt enters itself in the pool's index (ganeti_ceph_adoptions) and records
its target on the image (ganeti.adopt, done=false) before the rename, and marks
it done after the metadata. The interruption is made by running the real adopt
in-process and stopping it at the rename: before it (record written, image not
moved), or right after it (before the metadata).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from typing import ClassVar

import pytest
import rbd

from ganeti_ceph.errors import NotFound
from ganeti_ceph.rbd import omap_index, volumes
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, provider_fixture
from tests.conftest import LocalCluster

RECORD = "ganeti.adopt"


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("provider-adopt")))


def record(old: str, to: str, done: bool) -> str:
    return json.dumps({"from": old, "to": to, "done": done}, sort_keys=True)


def with_data(prov: Provider, mib: int = 64) -> tuple[str, bytes]:
    """A volume made by the provider, holding 1 MiB of random data at its end."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE=str(mib)).ok()
    data = os.urandom(MIB)
    prov.write(vol, data, (mib - 1) * MIB)
    return vol, data


class Died(Exception):
    """The adopt's process died here."""


def first_half(prov: Provider, old: str, to: str, rename: bool = True) -> None:
    """Run the real adopt of `old` as `to` and let it die at the rename: after it (rename=True: the image is `to`,
    without its metadata) or before it (the record written, the image still `old`)."""
    real = rbd.RBD.rename

    def dies(self: rbd.RBD, ioctx: object, src: str, dst: str) -> None:
        if rename:
            real(self, ioctx, src, dst)
        raise Died(f"killed {'after' if rename else 'before'} renaming {src} to {dst}")

    with pytest.MonkeyPatch.context() as mp, Session(prov.cluster.client) as s:
        mp.setattr(rbd.RBD, "rename", dies)
        with pytest.raises(Died):
            volumes.adopt(s, prov.cluster.client.pool, old, to, prov.size_mib(old))
    assert prov.metadata(to if rename else old)[RECORD] == record(old, to, False)
    assert index(prov, old) == {"at": old, "to": to}


def index(prov: Provider, old: str) -> dict | None:
    """The pool's in-flight adoption entry of `old`."""
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        raw = omap_index.get(s, io, volumes.ADOPTIONS, old)
    return json.loads(raw) if raw else None


def adopted(prov: Provider, old: str, new: str, data: bytes, mib: int) -> None:
    """`new` is `old`, complete: the data, the size asked, the new volume's metadata, the record done."""
    assert not prov.exists(old) and prov.exists(new)
    assert prov.read(new, 63 * MIB, MIB) == data and prov.size_mib(new) == mib
    meta = prov.metadata(new)
    assert meta["ganeti.uuid"] == prov.uuids[new] and meta["ganeti.access"] == "userspace"
    rec = json.loads(meta[RECORD])
    assert isinstance(rec.pop("at"), int) and rec == {"from": old, "to": new, "done": True}


def test_repeat_of_the_same_create_completes_it(prov: Provider) -> None:
    """Interrupted after the rename: the image is under the new name with the old metadata. Before the fix the
    repeat was refused ("already exists and is not this volume") and the image stayed half-adopted."""
    old, data = with_data(prov)
    new = prov.volume()
    first_half(prov, old, new)
    prov.run("create", new, VOL_SIZE="128", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    adopted(prov, old, new, data, 128)
    prov.run("create", new, VOL_SIZE="128", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()  # done: a no-op
    adopted(prov, old, new, data, 128)
    prov.run("remove", new).ok()


def test_another_create_of_the_same_image_takes_it_over(prov: Provider) -> None:
    """Ganeti never repeats a failed create: the next `--disk add,adopt_image=OLD` has a new volume name. It finds
    the image the interrupted adopt left (by its record) and moves it on. Before the fix: OLD not found."""
    old, data = with_data(prov)
    lost, new = prov.volume(), prov.volume()
    first_half(prov, old, lost)
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    adopted(prov, old, new, data, 64)
    assert not prov.exists(lost) and index(prov, old) is None
    prov.run("remove", new).ok()


def test_record_without_rename_changes_nothing(prov: Provider) -> None:
    """Interrupted between the record and the rename: the image is still where it was and a new adopt works."""
    old, data = with_data(prov)
    never, new = prov.volume(), prov.volume()
    first_half(prov, old, never, rename=False)
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    adopted(prov, old, new, data, 64)
    assert not prov.exists(never)
    prov.run("remove", new).ok()


def test_refusals_change_nothing(prov: Provider) -> None:
    """An image that exists nowhere is one line; a completed adoption is not taken again under another name;
    an interrupted one that would shrink is refused and stays where it is, with its record."""
    ghost, new = prov.volume(), prov.volume()
    err = prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=ghost).one_error()
    assert "does not exist" in err and not prov.exists(new)

    old, data = with_data(prov)
    done = prov.volume()
    prov.run("create", done, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    assert "does not exist" in prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old).one_error()
    assert not prov.exists(new) and prov.read(done, 63 * MIB, MIB) == data

    lost = prov.volume()
    first_half(prov, done, lost)
    assert "never shrink" in prov.run("create", new, VOL_SIZE="32", EXTP_ADOPT_IMAGE=done).one_error()
    assert not prov.exists(new) and prov.metadata(lost)[RECORD] == record(done, lost, False)
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=done, EXTP_ACCESS="userspace").ok()
    assert prov.read(new, 63 * MIB, MIB) == data and not prov.exists(lost)
    prov.run("remove", new).ok()


def test_remove_refuses_an_adoption_stopped_halfway(prov: Provider) -> None:
    """An image an adopt left halfway holds data nobody proved to be garbage: remove names the way out instead."""
    old, data = with_data(prov)
    lost = prov.volume()
    first_half(prov, old, lost)
    err = prov.run("remove", lost).one_error()
    assert "in the middle of an adoption" in err and f"rbd rename rbd/{lost} rbd/{old}" in err, err
    assert prov.read(lost, 63 * MIB, MIB) == data
    new = prov.volume()
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    prov.run("remove", new).ok()  # complete, and no wipe here (no Ganeti cluster on this host): removable
    assert not prov.exists(new) and not prov.exists(lost)


def test_a_takeover_interrupted_again_is_still_found(prov: Provider) -> None:
    """The index names where the image was when the attempt began and where it goes: a second adopt that dies
    before its own rename (the image still under the first attempt's name, its record already naming the second
    target) is found by a third."""
    old, data = with_data(prov)
    lost, lost2, new = prov.volume(), prov.volume(), prov.volume()
    first_half(prov, old, lost)
    def dies(*args: object) -> None:
        raise Died("killed before the second rename")

    with pytest.MonkeyPatch.context() as mp, Session(prov.cluster.client) as s:
        mp.setattr(rbd.RBD, "rename", dies)
        with pytest.raises(Died):
            volumes.adopt(s, prov.cluster.client.pool, old, lost2, 64)
    assert index(prov, old) == {"at": lost, "to": lost2} and prov.metadata(lost)[RECORD] == record(old, lost2, False)
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    adopted(prov, old, new, data, 64)
    assert not prov.exists(lost) and not prov.exists(lost2) and index(prov, old) is None
    prov.run("remove", new).ok()


class Opens(rbd.Image):
    """rbd.Image, counting the images opened."""

    names: ClassVar[list[str]] = []

    def __init__(self, ioctx: object, name: str, *args: object, **kw: object) -> None:
        Opens.names.append(name)
        super().__init__(ioctx, name, *args, **kw)


def test_a_typo_in_adopt_image_opens_no_image(prov: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review I, R5: a missing adopt_image= looked for an interrupted adoption by opening every image of the pool
    (O(pool): minutes on a big pool, then the action's timeout instead of "does not exist"). Now it is one read of
    the pool's index: with 60 other images, among them one left halfway by an adoption, no image is opened."""
    old, data = with_data(prov)
    first_half(prov, old, prov.volume())  # an index entry and a halfway image that are not the typo's
    many = [prov.volume() for _ in range(60)]
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        for name in many:
            rbd.RBD().create(io, name, MIB, old_format=False)
        assert len(rbd.RBD().list(io)) > 60
        monkeypatch.setattr(rbd, "Image", Opens)
        Opens.names = []
        with pytest.raises(NotFound, match=r"image rbd/\S+ does not exist \(nor an interrupted adoption of it\)"):
            volumes.adopt(s, prov.cluster.client.pool, old + "-typo", prov.volume(), 64)
        assert Opens.names == []
        monkeypatch.undo()
    err = prov.run("create", prov.volume(), VOL_SIZE="64", EXTP_ADOPT_IMAGE=old + "-typo").one_error()
    assert "does not exist" in err, err
    new = prov.volume()
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()  # the halfway one
    adopted(prov, old, new, data, 64)
    prov.run("remove", new).ok()
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        for name in many:
            rbd.RBD().remove(io, name)


def test_only_a_new_unused_image_is_proven_empty(prov: Provider) -> None:
    """What the access switch asks before it takes out a disk whose add did not adopt: a fresh create is
    provably empty; one written to, or one carrying an adoption record, is not."""
    fresh, written = prov.volume(), prov.volume()
    for vol in (fresh, written):
        prov.run("create", vol, VOL_SIZE="64").ok()
    prov.write(written, b"x" * 4096, 0)
    old, _ = with_data(prov)
    new = prov.volume()
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        assert volumes.unproven_empty(s, io, fresh) is None
        assert volumes.unproven_empty(s, io, written) == "holds data"
        assert "carries an adoption record" in (volumes.unproven_empty(s, io, new) or "")
    for vol in (fresh, written, new):
        prov.run("remove", vol).ok()


def test_the_name_a_cut_short_rename_left_behind_removes_nothing(prov: Provider) -> None:
    """Review I, R7: librbd's rename writes rbd_id.NEW, updates the directory, then removes rbd_id.OLD; cut short
    before the last step, both names open the one image. A remove through OLD (the access switch's old entry)
    would trash the adopted data; the image's record names OLD as its source, so the remove is refused."""
    old, data = with_data(prov)
    new = prov.volume()
    prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        # The state after the rename's first step: rbd_id.OLD and rbd_id.NEW name one image, the directory OLD.
        io.write_full(f"rbd_id.{old}", io.read(f"rbd_id.{new}"))
        dir_rename(io, new, old)
        try:
            assert prov.read(old, 63 * MIB, MIB) == data  # the old name opens the adopted image
            err = prov.run("remove", old).one_error()
            assert f"rbd/{old} is rbd/{new}, adopted from it: {old} is a name its rename left behind" in err, err
            assert prov.read(new, 63 * MIB, MIB) == data
        finally:
            dir_rename(io, old, new)
            io.remove_object(f"rbd_id.{old}")
    prov.run("remove", new).ok()


def dir_rename(io: object, src: str, dst: str) -> None:
    """cls_rbd's dir_rename_image, the rename's step on the pool's rbd_directory (src, dst, image id)."""
    image_id = io.read(f"rbd_id.{src}")[4:].decode()  # type: ignore[attr-defined]
    payload = b"".join(struct.pack("<I", len(x)) + x for x in (src.encode(), dst.encode(), image_id.encode()))
    io.execute("rbd_directory", "rbd", "dir_rename_image", payload)  # type: ignore[attr-defined]


def test_nothing_leaked(prov: Provider) -> None:
    assert prov.leaks() == []
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        left = {v: index(prov, v) for v in prov.volumes if omap_index.get(s, io, volumes.ADOPTIONS, v)}
    assert left == {}, f"in-flight adoption entries left: {left}"
