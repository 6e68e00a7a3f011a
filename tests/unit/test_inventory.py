"""The volume inventory's pure parts: Ganeti's answer parsed, the join, the filters; and `gnt-storage volume`'s
gnt-* output of them (gnt_storage/cli/volume.py through _listing.py)."""

from __future__ import annotations

import json

import pytest

from ganeti_ceph.errors import GanetiFailed, UsageError
from ganeti_ceph.ganeti.cli import DISK_SEP, GDisk, GNode, parse_instance_disks
from ganeti_ceph.rbd import inventory
from ganeti_ceph.rbd.inventory import Image, Volume
from ganeti_ceph.rbd.locks import PREFIX, Holder
from gnt_storage.cli import _listing, volume

MIB = 1024 * 1024
U1, U2, U3 = "0f4a1c7e-0000-4000-8000-000000000001", "0f4a1c7e-0000-4000-8000-000000000002", "0f4a1c7e-3"
# What Ganeti 3.0 prints for `gnt-instance list --no-headers --separator=DISK_SEP -o name,disk.uuids,disk.names`:
# list fields are str() of the Python list (cli.FormatQueryResult, QFT_OTHER), unnamed disks None.
GANETI_ANSWER = DISK_SEP.join(["web.example", f"['{U1}', '{U2}']", "[None, 'da|ta']"]) + "\n" + \
    DISK_SEP.join(["empty.example", "[]", "[]"]) + "\n" + DISK_SEP.join(["db.example", f"['{U3}']", "['root']"]) + "\n"


def image(name: str, uuid: str = "", watchers: tuple[str, ...] = (), used: int | None = 3 * MIB,
          snaps: tuple[str, ...] = (), parent: str = "", backend: str = "default", **meta: str) -> Image:
    m = {"ganeti.access": "userspace", **meta}
    if uuid:
        m["ganeti.uuid"] = uuid
    return Image(backend, "rbd", name, 1024 * MIB, used, m, watchers, snaps, parent)


def test_ganeti_answer_parsed() -> None:
    disks = parse_instance_disks(GANETI_ANSWER)
    assert disks == [GDisk("web.example", 0, U1, ""), GDisk("web.example", 1, U2, "da|ta"),
                     GDisk("db.example", 0, U3, "root")]


@pytest.mark.parametrize("line", ["web.example|['a']|[None]", f"web{DISK_SEP}[oops{DISK_SEP}[]",
                                  f"w{DISK_SEP}5{DISK_SEP}[]"])
def test_unreadable_ganeti_answer_is_one_line(line: str) -> None:
    with pytest.raises(GanetiFailed, match="unexpected gnt-instance list output"):
        parse_instance_disks(line)


def test_join_owner_orphans_mapped_open() -> None:
    """Owners by the recorded disk UUID; watcher addresses named by Ganeti's node IPs first, then by the IPs open
    records give; an address nobody names stays an address; our images sorted by name."""
    disks = inventory.owners(parse_instance_disks(GANETI_ANSWER))
    rec = json.dumps({"mode": "exclusive", "ip": "10.0.0.7", "since": 1})
    imgs = [image("b", U2, watchers=("10.0.0.7:0/1", "198.18.33.11:0/22", "[v2:10.9.9.9:0/3]")),
            image("a", U1, **{PREFIX + "node7": rec}),
            image("c", "not-a-disk-of-ganeti"), image("d")]
    nodes = inventory.node_ips([GNode("node1.example", "198.18.33.11", "default", False, True, "198.18.34.11")])
    vols = inventory.join(imgs, disks, nodes)
    assert [v.image.name for v in vols] == ["a", "b", "c", "d"]
    a, b, c, d = vols
    assert (a.disk, b.disk, c.disk, d.disk) == (disks[U1], disks[U2], None, None)
    assert b.mapped == ("10.9.9.9", "node1.example", "node7")
    assert a.holders == (Holder("node7", True, "10.0.0.7"),) and a.mapped == ()
    rows = [inventory.row(v) for v in vols]
    assert rows[1] == {"name": "b", "instance": "web.example", "disk": "1 (da|ta)", "backend": "default",
                       "pool": "rbd", "size": 1024, "used": 3, "access": "userspace",
                       "mapped": "10.9.9.9,node1.example,node7", "open": "-", "snapshots": 0, "parent": "-"}
    assert rows[0]["open"] == "node7:exclusive" and rows[0]["disk"] == "0"
    assert rows[2]["instance"] == rows[3]["instance"] == "-"
    assert "which no instance has" in inventory.owner_text(c) and "records no Ganeti disk" in inventory.owner_text(d)


def test_node_ips_name_both_addresses() -> None:
    n = GNode("n1", "1.1.1.1", "g", False, False, "2.2.2.2")
    assert inventory.node_ips([n]) == {"1.1.1.1": "n1", "2.2.2.2": "n1"}


def test_select_filters_all_hold() -> None:
    disks = inventory.owners(parse_instance_disks(GANETI_ANSWER))
    vols = inventory.join([image("a", U1), image("b", U3, backend="ssd"), image("c")], disks, {})
    assert [v.image.name for v in inventory.select(vols, instance="web.example")] == ["a"]
    assert [v.image.name for v in inventory.select(vols, backend="ssd")] == ["b"]
    assert [v.image.name for v in inventory.select(vols, ["a", "c"])] == ["a", "c"]
    assert inventory.select(vols, ["a"], backend="ssd") == []


def test_targets_and_disks() -> None:
    disks = parse_instance_disks(GANETI_ANSWER)
    assert inventory.parse_target("vol.ext.disk0") == ("vol.ext.disk0", None)
    assert inventory.parse_target("web.example:1") == ("web.example", "1")
    assert inventory.find_disk(disks, "web.example", "1").uuid == U2
    assert inventory.find_disk(disks, "web.example", "da|ta").uuid == U2
    assert inventory.find_disk(disks, "web.example", U2).index == 1
    for bad in (":1", "web:"):
        with pytest.raises(UsageError, match="INSTANCE:DISK"):
            inventory.parse_target(bad)
    with pytest.raises(UsageError, match=r"has no disk 5; its disks: 0, 1 \(da\|ta\)"):
        inventory.find_disk(disks, "web.example", "5")
    with pytest.raises(UsageError, match="instance nope does not exist"):
        inventory.find_disk(disks, "nope", "0")


@pytest.mark.parametrize(("mib", "units", "text"), [
    (0, "h", "0M"), (1023, "h", "1023M"), (1024, "h", "1.0G"), (1536, "h", "1.5G"), (1024 * 1024, "h", "1.0T"),
    (1536, "m", "1536"), (1536, "g", "1.5"), (3 * 1024 * 1024, "t", "3.0"),
])
def test_units_as_ganeti(mib: int, units: str, text: str) -> None:
    """Ganeti's utils.text.FormatUnit, the same numbers."""
    assert _listing.format_unit(mib, units) == text


def test_table_as_gnt_list() -> None:
    """Columns padded to their widest cell, numbers right-aligned, the last column unpadded; with a separator
    plain cells and MiB; --no-headers drops the header line; unknown used is '-'."""
    rows = [{"name": "a", "instance": "web", "size": 1536, "used": None},
            {"name": "longer", "instance": "-", "size": 10, "used": 3}]
    fields = ("name", "size", "used", "instance")
    assert _listing.table(rows, fields, volume.FIELDS) == ["Name   Size Used Instance",
                                                           "a      1.5G    - web",
                                                           "longer  10M   3M -"]
    assert _listing.table(rows, fields, volume.FIELDS, headers=False, separator="|") == ["a|1536|-|web",
                                                                                         "longer|10|3|-"]
    assert _listing.table(rows, ("instance",), volume.FIELDS, separator=";", units="g")[1:] == ["web", "-"]
    assert _listing.table(rows, ("size",), volume.FIELDS, units="g") == ["Size", " 1.5", " 0.0"]
    assert _listing.table([], fields, volume.FIELDS, headers=False) == []


def test_fields() -> None:
    def check(text: str) -> tuple[str, ...]:
        return _listing.check_fields(text, volume.FIELDS, volume.DEFAULT_FIELDS)

    assert check("name,size") == ("name", "size")
    assert check("+parent,name") == (*volume.DEFAULT_FIELDS, "parent")
    with pytest.raises(UsageError, match=r"unknown field.*colour; fields: name"):
        check("name,colour")
    with pytest.raises(UsageError):
        check(",")


def test_show_every_field() -> None:
    disks = inventory.owners(parse_instance_disks(GANETI_ANSWER))
    shared = json.dumps({"mode": "shared", "ip": "10.0.0.8"})
    vol = inventory.join([image("a", U1, snaps=("s1", "s2"), parent="rbd/base@ganeti-clone-1", used=None,
                                **{"ganeti.origin": "rbd/base@ganeti-clone-1", PREFIX + "n8": shared})],
                         disks, {})[0]
    text = "\n".join(volume.show(vol))
    for spec in volume.FIELDS.values():
        assert f"\n{spec.header}:" in f"\n{text}"
    assert f"Disk:      0, uuid {U1}" in text
    assert "Used:      - (no fast-diff" in text
    assert "Snapshots: 2\n  s1\n  s2" in text
    assert "Open:\n  n8: shared, ip 10.0.0.8" in text
    assert "Parent:    rbd/base@ganeti-clone-1\n" in text
    flat = Volume(image("f", **{"ganeti.origin": "rbd/base@s"}), None, (), ())
    assert "Parent:    - (made from rbd/base@s, flattened since)" in volume.show(flat)
    orphan = Volume(image("o"), None, (), ())
    shown = volume.show(orphan)
    assert any(line.startswith("Instance:  - (orphan") for line in shown) and "Open:      -" in shown
    assert "Snapshots: 0" in shown


@pytest.mark.parametrize(("argv", "text"), [
    (["volume", "list", "-o", "name,colour"], "unknown field(s) colour"),
    (["volume", "list", "--separator="], "--separator: give a non-empty separator"),
    (["volume", "show", "web:"], "give an image name or INSTANCE:DISK"),
    (["volume", "list", "--units", "k"], "argument --units: invalid choice"),
])
def test_command_line_refuses_before_reading(argv: list[str], text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad arguments are one UsageError line before any config, Ganeti or Ceph is read (no config exists here)."""
    from gnt_storage import cli

    monkeypatch.setenv("GANETI_CEPH_CONFIG", "/nonexistent/ceph.yaml")
    with pytest.raises(UsageError) as err:
        cli.main(argv)
    assert text in err.value.message and "\n" not in err.value.message
