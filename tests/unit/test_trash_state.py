"""cls_rbd's encoded trash entry (TrashImageSpec), as remove reads its state: bytes from Ceph 16.2.15."""

from __future__ import annotations

from ganeti_ceph.rbd.remove import TRASH_REMOVING, trash_state

# trash_get of an entry named "t1": version 2, compat 1, 24 bytes; source, name, two times, state.
NORMAL = bytes.fromhex("02011800000000020000007431b6cd0e6b509df820b6cd0e6b509df82000")
REMOVING = bytes.fromhex("02011800000000020000007431b6cd0e6b509df820b6cd0e6b509df82002")


def test_states_read_from_real_entries() -> None:
    assert trash_state(NORMAL) == 0
    assert trash_state(REMOVING) == TRASH_REMOVING


def test_a_version_1_entry_has_no_state_and_reads_normal() -> None:
    v1 = bytes([1, 1, 23, 0, 0, 0]) + NORMAL[6:-1]
    assert trash_state(v1) == 0


def test_a_longer_name_moves_the_state() -> None:
    name = b"a3569fc8-0459-4aad-ba6b-bccc0e0c3777.ext.disk0"
    body = b"\x00" + len(name).to_bytes(4, "little") + name + bytes(16) + bytes([TRASH_REMOVING])
    assert trash_state(bytes([2, 1]) + len(body).to_bytes(4, "little") + body) == TRASH_REMOVING
