"""create with adopt_image= when an earlier adopt was interrupted, through the real provider on real Ceph.

An adopt records its target on the image (ganeti.adopt, done=false) before the
rename and marks it done after the metadata. The interruption is made by doing
the first steps by hand, exactly as adopt does them, and stopping there: after
the record (before the rename), and after the rename (before the metadata).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
import rbd

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


def first_half(prov: Provider, old: str, to: str, rename: bool = True) -> None:
    """What an adopt of `old` as `to` has done when it dies before the metadata: record, then rename."""
    with prov.image(old, read_only=False) as img:
        img.metadata_set(RECORD, record(old, to, False))
    if rename:
        with Session(prov.cluster.client) as s, s.ioctx() as io:
            rbd.RBD().rename(io, old, to)


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
    assert not prov.exists(lost)
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


def test_nothing_leaked(prov: Provider) -> None:
    assert prov.leaks() == []
