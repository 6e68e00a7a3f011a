"""The adoption record (ganeti.adopt) as remove reads it: which adopted images a remove must keep."""

from __future__ import annotations

import json

import pytest

from ganeti_ceph.errors import Busy
from ganeti_ceph.rbd.volumes import META_ADOPT, WIPE_UNDO_S, removable_adoption

NOW = 1_800_000_000.0


def meta(**rec: object) -> dict[str, str]:
    return {META_ADOPT: json.dumps(rec)}


@pytest.fixture
def lib(tmp_path) -> str:
    """A master candidate's /var/lib/ganeti with prealloc_wipe_disks on."""
    (tmp_path / "ssconf_cluster_name").write_text("c\n")
    (tmp_path / "config.data").write_text(json.dumps({"cluster": {"prealloc_wipe_disks": True}}))
    return str(tmp_path)


def test_halfway_adoption_is_kept(lib: str) -> None:
    with pytest.raises(Busy, match=r"in the middle of an adoption.*adopt_image=old.*rbd rename rbd/new rbd/old"):
        removable_adoption(meta(**{"from": "old", "to": "new", "done": False}), "rbd", "new", NOW, lib)


def test_fresh_adoption_is_kept_while_ganeti_wipes(lib: str, tmp_path) -> None:
    fresh = meta(**{"from": "old", "to": "new", "done": True, "at": int(NOW) - 5})
    with pytest.raises(Busy, match=r"adopted from rbd/old 5 s ago.*prealloc_wipe_disks is on.*undoing its failed wipe"):
        removable_adoption(fresh, "rbd", "new", NOW, lib)
    removable_adoption(fresh, "rbd", "new", NOW + WIPE_UNDO_S, lib)  # long since adopted: an ordinary remove
    (tmp_path / "config.data").write_text(json.dumps({"cluster": {"prealloc_wipe_disks": False}}))
    removable_adoption(fresh, "rbd", "new", NOW, lib)


@pytest.mark.parametrize("m", [{}, {META_ADOPT: "{"}, {META_ADOPT: "[]"}, {"ganeti.uuid": "u"},
                               meta(**{"from": "x", "to": "other", "done": False})])
def test_no_or_foreign_record_is_an_ordinary_remove(lib: str, m: dict[str, str]) -> None:
    removable_adoption(m, "rbd", "new", NOW, lib)


def test_fresh_adoption_is_kept_when_the_wipe_setting_cannot_be_read(tmp_path) -> None:
    """Review I, R10: a node in a cluster (ssconf) without config.data and no confd answer cannot tell whether
    Ganeti wipes; that is no proof the remove is not Ganeti's undo of a failed wipe. Before the fix None was
    taken as 'off' and the adopted image was removed."""
    (tmp_path / "ssconf_cluster_name").write_text("c\n")
    fresh = meta(**{"from": "old", "to": "new", "done": True, "at": int(NOW) - 5})
    with pytest.raises(Busy, match=r"adopted from rbd/old 5 s ago.*prealloc_wipe_disks is unknown here"):
        removable_adoption(fresh, "rbd", "new", NOW, str(tmp_path))
    removable_adoption(fresh, "rbd", "new", NOW + WIPE_UNDO_S, str(tmp_path))


def test_an_image_reached_through_its_old_name_is_kept(lib: str) -> None:
    """Review I, R7: a librbd rename cut short leaves rbd_id.OLD and rbd_id.NEW on one header; the old disk's
    remove (the switch's step 3, or its undo) opens the adopted image through OLD. Its record names OLD as the
    source, not the target: that is never the image to remove under OLD. Before the fix: an ordinary remove."""
    done = meta(**{"from": "old", "to": "new", "done": True, "at": int(NOW) - WIPE_UNDO_S * 10})
    with pytest.raises(Busy, match=r"rbd/old is rbd/new, adopted from it: old is a name its rename left behind"):
        removable_adoption(done, "rbd", "old", NOW, lib)
    removable_adoption(done, "rbd", "new", NOW, lib)  # under its own name, long since adopted: removable
    recorded = meta(**{"from": "old", "to": "new", "done": False})  # died between the record and the rename
    with pytest.raises(Busy, match=r"rbd/old is being adopted as rbd/new .*adopt_image=old.*image-meta remove"):
        removable_adoption(recorded, "rbd", "old", NOW, lib)
