"""Snapshots for export, clones (origin parameter) and clone depth, through the real executables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import rbd

from ganeti_ceph.session import Session
from tests.ceph.provider_env import GANETI_31_URI, MIB, Provider, provider_fixture, read_device, write_device
from tests.conftest import LocalCluster


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("provider-snapshots")))


def parent(prov: Provider, vol: str) -> dict[str, Any] | None:
    with prov.image(vol) as img:
        try:
            return img.get_parent_image_spec()
        except rbd.ImageNotFound:
            return None


def snaps(prov: Provider, vol: str) -> list[str]:
    with prov.image(vol) as img:
        return sorted(s["name"] for s in img.list_snaps())


@pytest.mark.parametrize("access", ["kernelspace", "userspace"])
def test_snapshot_then_export_read(prov: Provider, access: str) -> None:
    """snapshot makes `<vol>.snap` holding the data of that moment; Ganeti's export sequence on it (attach,
    open, read, attach, detach, remove) works and leaves no `.snap` image and no snapshot on the volume."""
    vol = prov.volume()
    snapvol = prov.track(f"{vol}.snap")
    prov.run("create", vol, VOL_SIZE="64", EXTP_ACCESS=access).ok()
    dev, _ = prov.attach(vol, EXTP_ACCESS=access)
    old, new = os.urandom(MIB), os.urandom(MIB)
    if access == "kernelspace":
        write_device(dev, old, 2 * MIB)
    else:
        prov.write(vol, old, 2 * MIB)

    res = prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol, VOL_SNAPSHOT_SIZE="64", EXTP_ACCESS=access).ok()
    assert "made" in res.note
    assert "already exists" in prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol, VOL_SNAPSHOT_SIZE="64",
                                        EXTP_ACCESS=access).ok().note
    if access == "kernelspace":
        write_device(dev, new, 2 * MIB)
    else:
        prov.write(vol, new, 2 * MIB)

    first, uri = prov.attach(snapvol, EXTP_ACCESS=access)
    assert uri == f"kvm:rbd:rbd/{snapvol}:id=ganeti" and GANETI_31_URI.match(uri.removeprefix("kvm:"))
    prov.run("open", snapvol, VOL_OPEN_EXCLUSIVE="True", EXTP_ACCESS=access).ok()
    if access == "kernelspace":
        assert first.startswith("/dev/loop") and first != dev
        assert read_device(first, 2 * MIB, MIB) == old
    else:
        assert first == ""
        assert prov.read(snapvol, 2 * MIB, MIB) == old
    assert prov.attach(snapvol, EXTP_ACCESS=access)[0] == first
    prov.run("detach", snapvol, EXTP_ACCESS=access).ok()
    prov.run("remove", snapvol, EXTP_ACCESS=access).ok()

    assert not prov.exists(snapvol)
    assert snaps(prov, vol) == []
    assert prov.read(vol, 2 * MIB, MIB) == new
    prov.run("detach", vol, EXTP_ACCESS=access).ok()
    prov.run("remove", vol, EXTP_ACCESS=access).ok()


def test_clone_from_image_and_from_snapshot(prov: Provider) -> None:
    """origin=pool/image clones from a snapshot the provider takes; origin=image@snap clones from that
    snapshot; both read the template's data; the template cannot be removed while they exist."""
    tmpl = prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(tmpl, pattern)

    c1 = prov.volume()
    assert "cloned from" in prov.run("create", c1, VOL_SIZE="64", EXTP_ORIGIN=f"rbd/{tmpl}").ok().note
    spec = parent(prov, c1)
    assert spec and spec["pool_name"] == "rbd" and spec["image_name"] == tmpl
    assert spec["snap_name"].startswith("ganeti-")
    assert prov.read(c1, 0, MIB) == pattern
    line = prov.run("remove", tmpl).one_error()
    assert f"rbd/{c1}" in line
    assert prov.exists(tmpl) and prov.read(tmpl, 0, MIB) == pattern

    with prov.image(tmpl, read_only=False) as img:
        img.create_snap("gold")
    prov.write(tmpl, os.urandom(MIB))  # after the snapshot: clones of gold do not see it
    c2 = prov.volume()
    prov.run("create", c2, VOL_SIZE="64", EXTP_ORIGIN=f"{tmpl}@gold").ok()
    spec = parent(prov, c2)
    assert spec and (spec["image_name"], spec["snap_name"]) == (tmpl, "gold")
    assert prov.read(c2, 0, MIB) == pattern
    assert prov.metadata(c2)["ganeti.uuid"] == prov.uuids[c2]
    prov.run("remove", tmpl).one_error()
    assert prov.exists(tmpl)

    for vol in (c1, c2):
        prov.run("remove", vol).ok()
    with prov.image(tmpl, read_only=False) as img:
        if img.is_protected_snap("gold"):  # only on pre-mimic clusters (clone v1)
            img.unprotect_snap("gold")
        img.remove_snap("gold")
    prov.run("remove", tmpl).ok()
    assert not any(prov.exists(v) for v in (tmpl, c1, c2))


def test_clone_of_a_big_template_grows_to_the_size_asked(prov: Provider) -> None:
    """A clone of a 10 GiB (sparse) template asked for 12 GiB is 12 GiB, with the template as parent."""
    tmpl, vol = prov.volume(), prov.volume()
    prov.run("create", tmpl, VOL_SIZE="10240").ok()
    prov.run("create", vol, VOL_SIZE="12288", EXTP_ORIGIN=f"rbd/{tmpl}").ok()
    assert prov.size_mib(vol) == 12288 and prov.size_mib(tmpl) == 10240
    spec = parent(prov, vol)
    assert spec and spec["image_name"] == tmpl
    prov.run("remove", vol).ok()
    prov.run("remove", tmpl).ok()


def test_clone_chain_is_flattened_beyond_max_depth(prov: Provider) -> None:
    """With clone_max_depth: 2, a clone of a clone keeps its parent but the next one is flattened
    (no parent) and still holds the data."""
    cfg = prov.config("depth2", clone_max_depth=2)
    base = prov.volume()
    prov.run("create", base, cfg, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(base, pattern, MIB)
    chain = [base]
    for _ in range(3):
        vol = prov.volume()
        prov.run("create", vol, cfg, VOL_SIZE="64", EXTP_ORIGIN=f"rbd/{chain[-1]}").ok()
        chain.append(vol)
    for child, origin in ((chain[1], chain[0]), (chain[2], chain[1])):
        spec = parent(prov, child)
        assert spec and spec["image_name"] == origin
    assert parent(prov, chain[3]) is None
    assert prov.read(chain[3], MIB, MIB) == pattern
    for vol in reversed(chain):
        prov.run("remove", vol, cfg).ok()
    assert not any(prov.exists(v) for v in chain)


def test_missing_origin_fails_in_one_line_and_creates_nothing(prov: Provider) -> None:
    """A missing origin image or snapshot is one clear line, and neither the volume nor a snapshot appears."""
    tmpl = prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64").ok()
    missing = prov.volume()
    for origin, needle in ((f"rbd/{missing}", missing), (missing, missing), (f"{tmpl}@nosuchsnap", "nosuchsnap")):
        vol = prov.volume()
        line = prov.run("create", vol, VOL_SIZE="64", EXTP_ORIGIN=origin).one_error()
        assert needle in line, line
        assert not prov.exists(vol)
    assert not prov.exists(missing)
    assert snaps(prov, tmpl) == []
    prov.run("remove", tmpl).ok()


def test_removing_the_last_clone_drops_the_snapshot_made_for_it(prov: Provider) -> None:
    """origin=pool/image snapshots the template; once its only clone is removed, that snapshot goes too
    (as for snapshot volumes), or templates collect one snapshot per instance ever made from them."""
    tmpl, vol = prov.volume(), prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64").ok()
    try:
        prov.run("create", vol, VOL_SIZE="64", EXTP_ORIGIN=f"rbd/{tmpl}").ok()
        prov.run("remove", vol).ok()
        assert snaps(prov, tmpl) == []
    finally:
        prov.run("remove", vol).ok()
        prov.run("remove", tmpl).ok()


def test_removing_a_template_names_clones_of_its_user_snapshot(prov: Provider) -> None:
    """A template with a clone of its own snapshot `gold` is refused naming that clone."""
    tmpl, vol = prov.volume(), prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64").ok()
    with prov.image(tmpl, read_only=False) as img:
        img.create_snap("gold")
    try:
        prov.run("create", vol, VOL_SIZE="64", EXTP_ORIGIN=f"{tmpl}@gold").ok()
        assert f"rbd/{vol}" in prov.run("remove", tmpl).one_error()
    finally:
        prov.run("remove", vol).ok()
        with prov.image(tmpl, read_only=False) as img:
            if img.is_protected_snap("gold"):
                img.unprotect_snap("gold")
            img.remove_snap("gold")
        prov.run("remove", tmpl).ok()


def test_adopt_renames_without_copying(prov: Provider) -> None:
    """create with adopt_image= takes the old image over under the new name (the access switch's step):
    same data, new metadata, refused while mapped or when it would shrink; a repeat is a no-op."""
    old, new = prov.volume(), prov.volume()
    prov.run("create", old, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(old, pattern, 0)
    prov.attach(old)
    assert "in use" in prov.run("create", new, VOL_SIZE="64", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").one_error()
    prov.run("detach", old).ok()
    assert "volumes never shrink" in prov.run("create", new, VOL_SIZE="32", EXTP_ADOPT_IMAGE=old).one_error()
    assert not prov.exists(new) and prov.exists(old)
    prov.run("create", new, VOL_SIZE="128", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()
    prov.run("create", new, VOL_SIZE="128", EXTP_ADOPT_IMAGE=old, EXTP_ACCESS="userspace").ok()  # Ganeti retry
    assert not prov.exists(old)
    assert prov.read(new, 0, MIB) == pattern and prov.size_mib(new) == 128
    meta = prov.metadata(new)
    assert meta["ganeti.access"] == "userspace" and meta["ganeti.uuid"] == prov.uuids[new]
    prov.run("remove", new).ok()
    prov.run("remove", old).ok()


def test_nothing_leaked(prov: Provider) -> None:
    """Last in the module: no mapping, rbd-fuse, image, snapshot or trash entry of these tests is left."""
    assert prov.leaks() == []


def test_snapshot_name_must_be_a_new_volume(prov: Provider) -> None:
    """VOL_SNAPSHOT_NAME equal to VOL_NAME, to another volume, or to another volume's snapshot volume (pending
    or made real) is refused in one line, and nothing is snapshotted; a repeat of a real snapshot succeeds."""
    vol, other = prov.volume(), prov.volume()
    for v in (vol, other):
        prov.run("create", v, VOL_SIZE="64").ok()
    assert "itself" in prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=vol).one_error()
    assert other in prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=other).one_error()
    snapvol = prov.track(f"{other}.snap")
    prov.run("snapshot", other, VOL_SNAPSHOT_NAME=snapvol).ok()
    assert snapvol in prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol).one_error()
    prov.attach(snapvol)  # made real: a clone of other's snapshot
    assert snapvol in prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol).one_error()
    assert "already exists" in prov.run("snapshot", other, VOL_SNAPSHOT_NAME=snapvol).ok().note
    assert snaps(prov, vol) == [] and len(snaps(prov, other)) == 1
    assert prov.metadata(other)["ganeti.uuid"] == prov.uuids[other]
    prov.run("detach", snapvol).ok()
    for v in (snapvol, vol, other):
        prov.run("remove", v).ok()


def test_remove_keeps_a_pending_snapshot_volume_readable(prov: Provider) -> None:
    """A snapshot volume the provider said it made must not vanish with its source: removing the source
    while the snapshot volume is pending is refused naming it, and the snapshot volume still reads."""
    vol = prov.volume()
    snapvol = prov.track(f"{vol}.snap")
    prov.run("create", vol, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(vol, pattern)
    prov.run("snapshot", vol, VOL_SNAPSHOT_NAME=snapvol).ok()
    line = prov.run("remove", vol).one_error()
    assert snapvol in line and prov.exists(vol)
    dev, _ = prov.attach(snapvol)
    assert read_device(dev, 0, MIB) == pattern
    prov.run("detach", snapvol).ok()
    prov.run("remove", vol).one_error()  # now a clone depends on it
    prov.run("remove", snapvol).ok()
    prov.run("remove", vol).ok()
    assert not prov.exists(vol) and not prov.exists(snapvol)


def test_a_clone_cut_short_is_finished_by_the_retry(prov: Provider) -> None:
    """clone makes the image, then writes its metadata, then grows it: a retry after an interruption at
    either point completes the volume (metadata, origin, size) instead of refusing it."""
    tmpl = prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64").ok()
    pattern = os.urandom(MIB)
    prov.write(tmpl, pattern)
    with prov.image(tmpl, read_only=False) as img:
        img.create_snap("gold")
    bits = (rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK | rbd.RBD_FEATURE_OBJECT_MAP
            | rbd.RBD_FEATURE_FAST_DIFF | rbd.RBD_FEATURE_DEEP_FLATTEN)
    cut, half = prov.volume(), prov.volume()
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        for vol in (cut, half):  # what each interrupted clone left
            rbd.RBD().clone(io, tmpl, "gold", io, vol, features=bits)
        with rbd.Image(io, half) as img:
            img.metadata_set("ganeti.uuid", prov.uuids[half])
            img.metadata_set("ganeti.origin", f"rbd/{tmpl}@gold")
    for vol in (cut, half):
        assert "already exists" in prov.run("create", vol, VOL_SIZE="128", EXTP_ORIGIN=f"{tmpl}@gold").ok().note
        meta = prov.metadata(vol)
        assert meta["ganeti.uuid"] == prov.uuids[vol] and meta["ganeti.origin"] == f"rbd/{tmpl}@gold"
        assert prov.size_mib(vol) == 128 and prov.read(vol, 0, MIB) == pattern
        prov.run("remove", vol).ok()
    with prov.image(tmpl, read_only=False) as img:
        img.remove_snap("gold")
    prov.run("remove", tmpl).ok()


def test_a_clone_inherits_none_of_its_parents_ganeti_metadata(prov: Provider) -> None:
    """librbd copies a parent's metadata into a clone: the template's open record (which fencing trusts),
    uuid and setinfo text must not reach the new volume, nor its retry after a cut-short clone."""
    tmpl = prov.volume()
    prov.run("create", tmpl, VOL_SIZE="64", VOL_CNAME="template").ok()
    prov.run("setinfo", tmpl, VOL_METADATA="originstname+template-vm").ok()
    prov.run("open", tmpl, VOL_OPEN_EXCLUSIVE="True").ok()
    assert any(k.startswith("ganeti.open.") for k in prov.metadata(tmpl))
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="64", EXTP_ORIGIN=f"rbd/{tmpl}").ok()
    meta = prov.metadata(vol)
    assert sorted(meta) == ["ganeti.access", "ganeti.origin", "ganeti.uuid"], meta
    assert meta["ganeti.uuid"] == prov.uuids[vol] and meta["ganeti.origin"].startswith(f"rbd/{tmpl}@ganeti-")
    prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True", config=prov.b).ok()  # nothing claims it for node-a
    prov.run("close", vol, config=prov.b).ok()
    prov.run("remove", vol).ok()
    prov.run("close", tmpl).ok()
    prov.run("remove", tmpl).ok()
