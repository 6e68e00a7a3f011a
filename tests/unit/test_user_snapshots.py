"""User snapshots' pure parts: names, the revert marker, --keep, disk look-up, the list table."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from ganeti_ceph.errors import Busy, UsageError
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.rbd import user_snapshots as us
from ganeti_ceph.rbd.access_switch import Instance
from ganeti_ceph.rbd.user_snapshots import Marker, UserSnapshot
from gnt_storage.cli import _listing
from gnt_storage.cli import snapshot as cli


def snap(name: str, sid: int, clones: tuple[str, ...] = (), state: str = "") -> UserSnapshot:
    return UserSnapshot(name, sid, 64 << 20, 0.0, False, clones, state)


def disk(index: int, name: str | None = None, provider: str = "rbd", dev_type: str = "ext") -> Disk:
    return Disk(index, f"uuid-{index}", dev_type, 64, "rw", name, f"vol-{index}", {"provider": provider}, "kernelspace")


@pytest.mark.parametrize("name", ["a", "20261201T051140Z", "before-revert-x", "A.b_c-d", "x" * 64])
def test_good_names(name: str) -> None:
    assert us.check_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", ".a", "a b", "a/b", "a@b", "é", "x" * 65, "a\n"])
def test_bad_names_are_one_line(name: str) -> None:
    with pytest.raises(UsageError, match="invalid snapshot name") as exc:
        us.check_name(name)
    assert "\n" not in exc.value.message


def test_only_our_prefix_is_a_user_snapshot() -> None:
    assert us.user_name("user.base") == "base"
    for other in ("ganeti-snap-0a1b", "ganeti-clone-0a1b", "base", "user.", "user.-x"):
        assert us.user_name(other) is None


def test_epoch_reads_librbds_naive_time_as_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert us.epoch(datetime(1970, 1, 2)) == 86400.0
        assert us.epoch(datetime(1970, 1, 2, tzinfo=UTC)) == 86400.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_stamp_and_unique() -> None:
    assert us.stamp(0) == "19700101T000000Z"
    assert us.unique("n", set()) == "n"
    assert us.unique("n", {"n", "n-2"}) == "n-3"


def test_marker_round_trip_and_garbage() -> None:
    m = Marker("good", "before-revert-1", 1 << 30, 5.0)
    assert us.parse_marker(m.text()) == m and us.parse_marker(None) is None
    for raw in ("{", "{}", '{"to": "a b", "safety": "s", "size": 1}', '{"to": "a", "safety": "s", "size": "x"}'):
        with pytest.raises(Busy, match="unreadable revert marker"):
            us.parse_marker(raw)


def test_keep_takes_the_oldest_by_snapshot_id() -> None:
    snaps = [snap("c", 9), snap("a", 2), snap("b", 5)]
    assert [s.name for s in us.oldest_beyond(snaps, 1)] == ["a", "b"]
    assert us.oldest_beyond(snaps, 3) == [] and us.oldest_beyond(snaps, 5) == []


def test_states_of_an_unfinished_revert() -> None:
    snaps = [snap("good", 1), snap("x", 2), snap("safe", 3)]
    assert us.states(snaps, None) == snaps
    got = {s.name: s.state for s in us.states(snaps, Marker("good", "safe", 1))}
    assert got == {"good": "revert target (unfinished)", "x": "", "safe": "revert safety (unfinished)"}


def test_disk_by_index_name_or_uuid() -> None:
    disks = (disk(0, "root"), disk(1), disk(2, provider="other"), disk(3, dev_type="plain", provider=""))
    assert us.resolve_disk("i", disks, "0").index == 0
    assert us.resolve_disk("i", disks, "root").index == 0
    assert us.resolve_disk("i", disks, "uuid-1").index == 1
    with pytest.raises(UsageError, match=r"no disk '7' \(its disks: 0 \(root\), 1, 2, 3\)"):
        us.resolve_disk("i", disks, "7")
    with pytest.raises(UsageError, match="it is ext/other"):
        us.resolve_disk("i", disks, "2")
    with pytest.raises(UsageError, match="it is plain"):
        us.resolve_disk("i", disks, "3")


@pytest.mark.parametrize(("running", "admin", "text"), [(True, "up", "is running"), (None, "up", "cannot tell"),
                                                         (False, "up", "meant to run")])
def test_revert_needs_a_stopped_instance(running: bool | None, admin: str, text: str) -> None:
    inst = Instance("i", "u", "x", running, admin, "kvm", ())
    with pytest.raises(Busy, match=text):
        us.check_stopped(inst)
    us.check_stopped(Instance("i", "u", "ADMIN_down", False, "down", "kvm", ()))


def test_output_fields() -> None:
    def fields(text: str) -> tuple[str, ...]:
        return _listing.check_fields(text, cli.FIELDS, cli.DEFAULT_FIELDS)

    assert fields(",".join(cli.DEFAULT_FIELDS)) == cli.DEFAULT_FIELDS
    assert fields("name,size") == ("name", "size")
    assert fields("+image") == (*cli.DEFAULT_FIELDS, "image")
    for bad in ("", "nosuch", "name,nosuch", ",", "+"):
        with pytest.raises(UsageError, match="--output"):
            fields(bad)


def test_table() -> None:
    rows = [cli.row(0, snap("a", 1, ("rbd/c1", "rbd/c2")), "rbd", "v0"),
            cli.row(1, snap("long-name", 2, state="s"), "rbd", "v1")]
    assert _listing.table(rows, ("disk", "name", "size"), cli.FIELDS) == [
        "Disk Name      Size", "0    a          64M", "1    long-name  64M"]
    assert _listing.table(rows, ("name", "clones", "image"), cli.FIELDS, headers=False, separator="|") == [
        "a|rbd/c1,rbd/c2|rbd/v0", "long-name||rbd/v1"]
    assert _listing.table([], ("name",), cli.FIELDS) == ["Name"]


@pytest.mark.parametrize(("argv", "text"), [
    (["snapshot", "list", "web", "-o", "name,colour"], "--output: unknown field(s) colour"),
    (["snapshot", "list", "web", "--separator="], "--separator: give a non-empty separator"),
])
def test_list_refuses_bad_options_before_reading(argv: list[str], text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad list options are one UsageError line before any config, Ganeti or Ceph is read (no config exists here)."""
    from gnt_storage import cli as gnt_storage

    monkeypatch.setenv("GANETI_CEPH_CONFIG", "/nonexistent/ceph.yaml")
    with pytest.raises(UsageError) as err:
        gnt_storage.main(argv)
    assert text in err.value.message and "\n" not in err.value.message
