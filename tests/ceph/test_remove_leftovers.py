"""remove finishes what a cut-short create or remove left behind, and nothing else.

A remove killed between its move to the RBD trash and the purge leaves the
image in the trash: Ganeti's repeat must purge it (it is ours: its own
ganeti.uuid is the VOL_UUID, or its header is already gone), and leave an
admin's trashed image of the same name alone. A create killed in librbd can leave the name in the pool's
directory with no image header: no data, but the name stays taken.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import rbd

from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd import header, remove
from ganeti_ceph.rbd.remove import TRASH_REMOVING
from ganeti_ceph.session import Session
from tests.ceph.provider_env import Provider, provider_fixture
from tests.conftest import LocalCluster


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[Provider]:
    yield from provider_fixture(local_cluster, str(tmp_path_factory.mktemp("remove-leftovers")), request=request)


def trash(prov: Provider) -> list[dict]:
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        return list(rbd.RBD().trash_list(io))


def test_a_remove_cut_short_in_the_trash_is_finished_by_the_repeat(prov: Provider) -> None:
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="16").ok()
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        rbd.RBD().trash_move(io, vol, 0)  # where a killed remove stops
    assert [e["name"] for e in trash(prov)].count(vol) == 1
    res = prov.run("remove", vol).ok()
    assert "removed" in res.stderr, res.stderr
    assert vol not in [e["name"] for e in trash(prov)]


def trashed_without_header(prov: Provider, purge_begun: bool) -> str:
    """A volume of ours moved to the trash and its header deleted; `purge_begun`: its entry marked
    removing first, as librbd's purge does."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="16").ok()
    with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
        rbd.RBD().trash_move(io, vol, 0)
        image_id = next(e["id"] for e in rbd.RBD().trash_list(io) if e["name"] == vol)
        if purge_begun:
            io.execute("rbd_trash", "rbd", "trash_state_set", header.encode(image_id) + bytes([TRASH_REMOVING, 0]))
        io.remove_object(header.of_id(image_id))
    return vol


def assert_left_in_trash(prov: Provider, vol: str) -> None:
    """remove says "already gone" and leaves the trash entry of that name (then purged here)."""
    try:
        res = prov.run("remove", vol).ok()
        assert "already gone" in res.stderr, res.stderr
        assert [e["name"] for e in trash(prov)].count(vol) == 1
    finally:
        with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
            for e in rbd.RBD().trash_list(io):
                if e["name"] == vol:
                    rbd.RBD().trash_remove(io, e["id"], True)


def test_a_remove_killed_after_its_purge_took_the_header_is_finished(prov: Provider) -> None:
    """The state librbd's trash remove leaves when killed after deleting the image's header and before
    its trash entry (CI, 2026-12-01: the repeat said "already gone" and the entry stayed): the entry,
    marked removing, names no image any more, so the repeat deletes it; nothing is left to lose."""
    vol = trashed_without_header(prov, purge_begun=True)
    res = prov.run("remove", vol).ok()
    assert "removed" in res.stderr, res.stderr
    assert vol not in [e["name"] for e in trash(prov)]


def test_a_trash_entry_whose_header_was_lost_otherwise_is_left_alone(prov: Provider) -> None:
    """A headerless entry librbd never began to purge (its header lost some other way: its data objects
    may still be there) is not taken: the remove says "already gone" and the entry stays for the admin."""
    assert_left_in_trash(prov, trashed_without_header(prov, purge_begun=False))


def test_a_purge_another_remove_finished_meanwhile_is_done(prov: Provider,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """Two removes of one volume (a crowd, Ganeti's retry) can both reach the purge of its trash entry,
    headerless or not: the one that finds it gone is done, with no warning that it is still there."""
    with Session(prov.cluster.client) as s, s.ioctx() as io:
        remove._purge(s, io, prov.cluster.client.pool, prov.volume(), uuid.uuid4().hex[:12])
    assert "WARNING" not in capfd.readouterr().err


def test_an_admins_trashed_image_of_that_name_is_left_alone(prov: Provider) -> None:
    vol = prov.volume()
    with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
        rbd.RBD().create(io, vol, 4 << 20, old_format=False)
        rbd.RBD().trash_move(io, vol, 0)  # not ours: no ganeti.uuid
    assert_left_in_trash(prov, vol)


def half_made(prov: Provider) -> tuple[str, str]:
    """The state librbd's create leaves when killed after its directory entry, before the header:
    the volume's name and its image id."""
    vol = prov.volume()
    image_id = uuid.uuid4().hex[:12]
    with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
        io.write_full(f"rbd_id.{vol}", header.encode(image_id))
        io.execute("rbd_directory", "rbd", "dir_add_image", header.encode(vol) + header.encode(image_id))
    return vol, image_id


def test_a_half_made_image_is_removed(prov: Provider) -> None:
    vol, _ = half_made(prov)
    assert prov.exists(vol)  # listed, yet it cannot be opened
    res = prov.run("remove", vol).ok()
    assert "removed" in res.stderr, res.stderr
    assert not prov.exists(vol)


def test_records_never_make_a_header(prov: Provider) -> None:
    """setinfo, open and close on an image without a header (a create killed before it, or a remove
    that purged it meanwhile) answer in one line and write nothing: cls_rbd's metadata_set alone would
    make a bare header object that no directory or trash entry names (ganeti_ceph/rbd/header.py)."""
    vol, image_id = half_made(prov)
    assert vol in prov.run("setinfo", vol, VOL_METADATA="x").one_error()
    assert vol in prov.run("open", vol, VOL_OPEN_EXCLUSIVE="True").one_error()
    assert "was not open" in prov.run("close", vol).ok().note
    with Session(prov.cluster.admin) as s, s.ioctx(prov.cluster.client.pool) as io:
        assert header.of_id(image_id) not in {o.key for o in io.list_objects()}
    prov.run("remove", vol).ok()
    assert not prov.exists(vol)


def test_an_image_made_meanwhile_is_not_taken_for_a_half_made_one(prov: Provider) -> None:
    """remove looks for a half-made name only after its open found nothing; a create of that name may
    have finished since. Its header proves a real image: refused in one line, the image kept."""
    vol = prov.volume()
    prov.run("create", vol, VOL_SIZE="16").ok()
    with Session(prov.cluster.client) as s, s.ioctx() as io, pytest.raises(Busy, match="made while"):
        remove._drop_half_made(s, io, prov.cluster.client.pool, vol)
    assert prov.exists(vol)
    prov.run("remove", vol).ok()
