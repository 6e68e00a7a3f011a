"""User snapshots on the real local cluster: add, list, revert (safety snapshot, resume), remove, --keep,
and the refusals (bad name, watcher, clone child, foreign protection); the provider's snapshots untouched."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import rbd

from ganeti_ceph.errors import Busy, NotFound, UsageError
from ganeti_ceph.rbd import snapshots, user_snapshots, volumes
from ganeti_ceph.rbd.service import VolumeRef, VolumeService
from ganeti_ceph.rbd.user_snapshots import PREFIX
from ganeti_ceph.session import Session
from tests.conftest import LocalCluster

MiB = 1024 * 1024


@pytest.fixture
def session(local_cluster: LocalCluster) -> Iterator[Session]:
    with Session(local_cluster.client) as s:
        yield s


@pytest.fixture
def image(session: Session) -> Iterator[str]:
    name = f"us-{os.urandom(4).hex()}"
    volumes.create(session, session.cfg.pool, name, 64)
    yield name
    with session.ioctx() as ioctx, rbd.Image(ioctx, name) as img:
        for snap in img.list_snaps():
            if img.is_protected_snap(snap["name"]):
                img.unprotect_snap(snap["name"])
            img.remove_snap(snap["name"])
    with session.ioctx() as ioctx:
        rbd.RBD().remove(ioctx, name)


def rw(s: Session, name: str, offset: int, data: bytes | int, snap: str | None = None) -> bytes:
    with s.ioctx() as ioctx, rbd.Image(ioctx, name, snapshot=snap, read_only=isinstance(data, int)) as img:
        if isinstance(data, int):
            return img.read(offset, data)
        img.write(data, offset)
        return data


def names(s: Session, image: str) -> list[str]:
    return [u.name for u in user_snapshots.listing(s, s.cfg.pool, image).snaps]


def rbd_snaps(s: Session, image: str) -> set[str]:
    with s.ioctx() as ioctx, rbd.Image(ioctx, image, read_only=True) as img:
        return {x["name"] for x in img.list_snaps()}


def test_add_list_revert_undo_remove(session: Session, image: str) -> None:
    s, pool = session, session.cfg.pool
    old, new, late = os.urandom(MiB), os.urandom(MiB), os.urandom(MiB)
    rw(s, image, 0, old)
    assert snapshots.snapshot(s, pool, image, f"{image}-export")  # the provider's own: never ours to touch
    provider = rbd_snaps(s, image)
    assert user_snapshots.add(s, pool, image, "one").name == "one"
    stamped = user_snapshots.add(s, pool, image, None, now=0).name
    assert stamped == "19700101T000000Z"
    rw(s, image, 0, new)
    rw(s, image, 32 * MiB, late)
    found = user_snapshots.listing(s, pool, image)
    assert [u.name for u in found.snaps] == ["one", stamped] and found.marker is None
    assert [u.size for u in found.snaps] == [64 * MiB] * 2 and not any(u.clones for u in found.snaps)

    done = user_snapshots.revert(s, pool, image, "one")
    assert not done.resumed and done.safety.startswith(user_snapshots.SAFETY_PREFIX)
    assert rw(s, image, 0, MiB) == old and rw(s, image, 32 * MiB, MiB) == bytes(MiB)
    assert rw(s, image, 0, MiB, snap=PREFIX + done.safety) == new  # the state before, kept
    assert names(s, image) == ["one", stamped, done.safety]
    with s.ioctx(pool) as ioctx:
        assert user_snapshots.revert_pending(s, ioctx, image) is None

    undone = user_snapshots.revert(s, pool, image, done.safety)  # the revert undone
    assert rw(s, image, 0, MiB) == new and rw(s, image, 32 * MiB, MiB) == late
    for name in ("one", stamped, done.safety, undone.safety):
        user_snapshots.remove(s, pool, image, name)
    assert names(s, image) == [] and rbd_snaps(s, image) == provider
    with s.ioctx(pool) as ioctx:
        assert snapshots.pending_for(s, ioctx, image) == [f"{image}-export"]
        assert snapshots.forget_pending(s, ioctx, pool, f"{image}-export")


def test_refusals_change_nothing(session: Session, image: str) -> None:
    s, pool = session, session.cfg.pool
    for bad in ("", "-x", "a b", "x/y", "é", "a" * 65):
        with pytest.raises(UsageError, match="invalid snapshot name"):
            user_snapshots.add(s, pool, image, bad)
    user_snapshots.add(s, pool, image, "base")
    with pytest.raises(Busy, match="has a snapshot base already"):
        user_snapshots.add(s, pool, image, "base")
    with pytest.raises(NotFound, match=r"no snapshot nosuch .*its snapshots: base"):
        user_snapshots.revert(s, pool, image, "nosuch")
    data = os.urandom(MiB)
    rw(s, image, 0, data)

    with Session(s.cfg) as other, other.ioctx() as ioctx, rbd.Image(ioctx, image), \
            pytest.raises(Busy, match="is open elsewhere"):  # a VM or a mapping: a watcher
        user_snapshots.revert(s, pool, image, "base")
    assert names(s, image) == ["base"] and rw(s, image, 0, MiB) == data
    assert user_snapshots.listing(s, pool, image).marker is None

    clone = f"{image}-child"
    volumes.clone(s, volumes.ImageRef(pool, image, PREFIX + "base"), pool, clone, 64)
    try:
        assert user_snapshots.listing(s, pool, image).snaps[0].clones == (f"{pool}/{clone}",)
        with pytest.raises(Busy, match=f"clones depend on it: {pool}/{clone}"):
            user_snapshots.remove(s, pool, image, "base")
        assert names(s, image) == ["base"]
    finally:
        with s.ioctx() as ioctx:
            rbd.RBD().remove(ioctx, clone)

    user_snapshots.add(s, pool, image, "held")
    with s.ioctx() as ioctx, rbd.Image(ioctx, image) as img:
        img.protect_snap(PREFIX + "held")  # by someone else: theirs to unprotect
    with pytest.raises(Busy, match="protected, not by ganeti-ceph"):
        user_snapshots.remove(s, pool, image, "held")
    with s.ioctx() as ioctx, rbd.Image(ioctx, image) as img:
        img.metadata_set(volumes.META_PROTECTED + PREFIX + "held", "1")  # as a v1 clone of ours records it
    for name in ("held", "base"):
        user_snapshots.remove(s, pool, image, name)
    assert names(s, image) == []
    with s.ioctx() as ioctx, rbd.Image(ioctx, image, read_only=True) as img:
        assert not [k for k, _ in img.metadata_list() if k.startswith(volumes.META_PROTECTED)]

def test_keep_removes_the_oldest_but_not_those_with_clones(session: Session, image: str) -> None:
    s, pool = session, session.cfg.pool
    assert snapshots.snapshot(s, pool, image, f"{image}-export")
    for name in ("a", "b"):
        user_snapshots.add(s, pool, image, name, keep=2)
    added = user_snapshots.add(s, pool, image, "c", keep=2)
    assert added.pruned == ["a"] and names(s, image) == ["b", "c"]
    clone = f"{image}-child"
    volumes.clone(s, volumes.ImageRef(pool, image, PREFIX + "b"), pool, clone, 64)
    try:
        added = user_snapshots.add(s, pool, image, "d", keep=2)
        assert added.pruned == [] and [n for n, _ in added.spared] == ["b"] and clone in added.spared[0][1]
        assert names(s, image) == ["b", "c", "d"]
    finally:
        with s.ioctx() as ioctx:
            rbd.RBD().remove(ioctx, clone)
    added = user_snapshots.add(s, pool, image, "e", keep=1)
    assert added.pruned == ["b", "c", "d"] and names(s, image) == ["e"]
    assert sum(1 for x in rbd_snaps(s, image) if x.startswith(volumes.OUR_SNAP_PREFIX)) == 1  # the provider's
    with s.ioctx(pool) as ioctx:
        assert snapshots.forget_pending(s, ioctx, pool, f"{image}-export")


def test_an_interrupted_revert_is_shown_refused_around_and_finished_by_a_rerun(session: Session, image: str) -> None:
    s, pool = session, session.cfg.pool
    old, new = os.urandom(MiB), os.urandom(MiB)
    rw(s, image, 0, old)
    user_snapshots.add(s, pool, image, "good")
    user_snapshots.add(s, pool, image, "other")
    rw(s, image, 0, new)
    with s.ioctx() as ioctx, rbd.Image(ioctx, image) as img:
        img.resize(96 * MiB)  # grown after the snapshot, as Ganeti's gnt-instance grow-disk would

    # Where a revert killed during its rollback stops: the marker written, the safety snapshot taken.
    cut = user_snapshots.revert(s, pool, image, "good", stop_after_safety=True)
    found = user_snapshots.listing(s, pool, image)
    assert found.marker is not None and (found.marker.to, found.marker.safety) == ("good", cut.safety)
    assert {u.name: u.state for u in found.snaps} == {"good": "revert target (unfinished)", "other": "",
                                                       cut.safety: "revert safety (unfinished)"}
    with s.ioctx(pool) as ioctx:
        pending = user_snapshots.revert_pending(s, ioctx, image)
        assert pending is not None and pending.to == "good"
        assert user_snapshots.revert_pending(s, ioctx, f"{image}-none") is None
    with pytest.raises(Busy, match=r"stopped halfway: finish it first .*revert-again good"):
        user_snapshots.add(s, pool, image, "more", rerun="revert-again")
    with pytest.raises(Busy, match="stopped halfway"):
        user_snapshots.revert(s, pool, image, "other")
    for name in ("good", cut.safety):
        with pytest.raises(Busy, match="needed by a revert to good"):
            user_snapshots.remove(s, pool, image, name)
    # No guest starts on it: the volume service's attach and open refuse, in either access mode.
    svc = VolumeService(s.cfg, lambda _cfg: contextlib.nullcontext(s))
    for call in (lambda: svc.attach(VolumeRef(pool, image), "userspace"),
                 lambda: svc.open(VolumeRef(pool, image), True)):
        with pytest.raises(Busy, match="its revert to snapshot good stopped halfway"):
            call()

    done = user_snapshots.revert(s, pool, image, "good")
    assert done.resumed and done.safety == cut.safety
    assert rw(s, image, 0, MiB) == old and rw(s, image, 0, MiB, snap=PREFIX + cut.safety) == new
    with s.ioctx() as ioctx, rbd.Image(ioctx, image, read_only=True) as img:
        assert img.size() == 96 * MiB  # the size Ganeti knows, kept
    assert user_snapshots.listing(s, pool, image).marker is None
    assert names(s, image) == ["good", "other", cut.safety]


KILLED_REVERT = """
import dataclasses, sys
from ganeti_ceph import config
from ganeti_ceph.rbd import user_snapshots as us
from ganeti_ceph.rbd.service import VolumeService
conf, run_dir, pool, image = sys.argv[1:]
svc = VolumeService(dataclasses.replace(config.load(conf), run_dir=run_dir))
with us.recorded_session(svc, pool, image) as s:
    us.revert(s, pool, image, "base")
"""


def test_a_revert_killed_in_its_rollback_is_finished_by_a_rerun(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """A revert SIGKILLed once its rollback began (1024 objects to roll back) leaves the marker, its watch and the
    image's lock: the rerun releases the dead client (recorded_session), then finishes the revert."""
    cfg = replace(local_cluster.client, run_dir=str(tmp_path))
    pool, image, chunk = cfg.pool, f"usk-{os.urandom(4).hex()}", 4096
    with Session(cfg) as s, s.ioctx() as ioctx:
        rbd.RBD().create(ioctx, image, 64 * MiB, order=16, old_format=False,
                         features=volumes.feature_bits(volumes.DEFAULT_FEATURES))
    try:
        with Session(cfg) as s, s.ioctx() as ioctx, rbd.Image(ioctx, image) as img:
            for offset in range(0, 64 * MiB, 64 * 1024):
                img.write(b"o" * chunk, offset)
            img.create_snap(PREFIX + "base")
            for offset in range(0, 64 * MiB, 64 * 1024):
                img.write(b"n" * chunk, offset)
        conf = os.path.join(local_cluster.dir, "ganeti-ceph.yaml")
        proc = subprocess.Popen([sys.executable, "-c", KILLED_REVERT, conf, str(tmp_path), pool, image],
                                stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stderr:  # type: ignore[union-attr]
                if "rolling back" in line:
                    proc.kill()
                    break
        finally:
            proc.kill()
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        svc = VolumeService(cfg)
        with user_snapshots.recorded_session(svc, pool, image) as s:
            marker = user_snapshots.listing(s, pool, image).marker
            assert marker is not None and marker.to == "base", "the kill came after the rollback had finished"
        # The rerun released the dead client (its address blocklisted, its lock broken). Its watch goes when
        # the OSD applies that blocklist: within fencing.WATCH_DROP_S on a quiet machine, later on a loaded
        # one (seen once in a whole run); meanwhile a rerun is refused in one line, as for a VM still there.
        deadline = time.monotonic() + 60
        while True:
            try:
                with user_snapshots.recorded_session(svc, pool, image) as s:
                    done = user_snapshots.revert(s, pool, image, "base")
                break
            except Busy as exc:
                assert "is open elsewhere" in exc.message and time.monotonic() < deadline, exc.message
                time.sleep(2)
        assert done.resumed and done.safety == marker.safety
        with Session(cfg) as s, s.ioctx() as ioctx, rbd.Image(ioctx, image, read_only=True) as img:
            assert {img.read(o, chunk) for o in range(0, 64 * MiB, 64 * 1024)} == {b"o" * chunk}
            img.set_snap(PREFIX + done.safety)
            assert {img.read(o, chunk) for o in range(0, 64 * MiB, 64 * 1024)} == {b"n" * chunk}
    finally:
        with Session(cfg) as s, s.ioctx() as ioctx:
            with rbd.Image(ioctx, image) as img:
                for snap in img.list_snaps():
                    img.remove_snap(snap["name"])
            rbd.RBD().remove(ioctx, image)
