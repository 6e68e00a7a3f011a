"""gnt-storage rbd-convert without Ganeti: translating GRNET's parameters, and the conversion against the fakes of
the access switch's tests (the same add/adopt/remove steps)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ganeti_ceph.rbd import convert as cv
from ganeti_ceph.rbd.access_switch import Disk, GanetiFailed, Refused
from tests.unit.test_access_switch import FakeGaneti, FakeImages, _journals_in_tmp_path, disk  # noqa: F401 (autouse)


def grnet(index: int, name: str | None = "vm-disk0", **params: str) -> Disk:
    """A disk GRNET's provider made: its image is named after the disk, its VOL_NAME image never existed."""
    return Disk(index=index, uuid=f"g{index}", dev_type="ext", size_mib=256, mode="rw", name=name,
                volume=f"g{index}.ext.disk{index}", params={"provider": "rbd", **params},
                access=params.get("access", "kernelspace"))


class Images(FakeImages):
    """The access switch's fake images, and who watches them."""

    def __init__(self, names: set[str]) -> None:
        super().__init__(names)
        self.watched: dict[str, list[str]] = {}

    def watchers(self, pool: str, image: str) -> list[str]:
        return self.watched.get(image, [])


def bed(*disks: Disk, images: set[str], **kw: object) -> tuple[FakeGaneti, FakeImages]:
    imgs = Images(images)
    return FakeGaneti(list(disks), imgs, **kw), imgs  # type: ignore[arg-type]


@pytest.mark.parametrize(("params", "expected"), [
    ({}, ("rbd", "kernelspace")),
    ({"rbd_pool": "vms", "userspace_only": "Yes"}, ("vms", "userspace")),
    ({"userspace_only": "no", "access": "userspace"}, ("rbd", "userspace")),
    ({"cephx_id": "synnefo", "cephx_keyring": "/etc/ceph/k", "image_format": "2", "image_features": "3",
      "stripe_unit": "4096", "stripe_count": "2", "reuse_data": "true", "origin": "snap"}, ("rbd", "kernelspace")),
])
def test_grnet_parameters_translate(params: dict, expected: tuple[str, str]) -> None:
    src = cv.grnet_source(grnet(0, **params))
    assert (src.pool, src.access) == expected and src.image == "vm-disk0"


@pytest.mark.parametrize(("d", "match"), [
    (grnet(0, rbd_pool="rbd", color="red"), r"parameter\(s\) color are neither"),
    (grnet(0, name=None, rbd_pool="rbd"), "has no name"),
    (grnet(0, name="Disk_0", rbd_pool="rbd"), "invalid image name 'Disk_0'"),
    (grnet(0, rbd_pool="bad/pool"), "invalid pool name"),
    (grnet(0, image_format="1"), "image_format=1: a format 1 image holds no metadata"),
])
def test_grnet_parameters_refused(d: Disk, match: str) -> None:
    with pytest.raises(Refused, match=match):
        cv.grnet_source(d)


def test_converts_grnet_disks_and_leaves_ours(capsys: pytest.CaptureFixture[str]) -> None:
    g, images = bed(grnet(0, rbd_pool="rbd", userspace_only="true", cephx_id="x"), disk(1),
                      grnet(2, name="vm-disk2"), images={"vm-disk0", "v1", "vm-disk2"})
    assert cv.convert("vm", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert g.calls == ["0:add,size=256M,provider=rbd,access=userspace,adopt_image=vm-disk0,pool=rbd", "g0:remove",
                       "u100:modify,name=vm-disk0",
                       "2:add,size=256M,provider=rbd,access=kernelspace,adopt_image=vm-disk2,pool=rbd", "g2:remove",
                       "u101:modify,name=vm-disk2"]
    assert [(d.name, d.access, d.volume, d.params) for d in g.disks] == [
        ("vm-disk0", "userspace", "v100", {"provider": "rbd", "access": "userspace", "pool": "rbd"}),
        (None, "kernelspace", "v1", {"provider": "rbd"}),
        ("vm-disk2", "kernelspace", "v101", {"provider": "rbd", "access": "kernelspace", "pool": "rbd"})]
    assert images.names == {"v100", "v1", "v101"} and images.records["v100"]["from"] == "vm-disk0"
    assert capsys.readouterr().out == "vm: disk/0, disk/2 converted to the rbd provider\n"
    assert cv.convert("vm", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert "nothing to do" in capsys.readouterr().out and len(g.calls) == 6


def test_dry_run_prints_and_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    g, images = bed(grnet(0, rbd_pool="rbd"), images={"vm-disk0"})
    assert cv.convert("vm", dry_run=True, ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert g.calls == [] and not g.deactivated and images.names == {"vm-disk0"}
    assert capsys.readouterr().out.splitlines() == [
        "gnt-instance deactivate-disks vm",
        "gnt-instance modify --disk 0:add,size=256M,provider=rbd,access=kernelspace,adopt_image=vm-disk0,pool=rbd vm",
        "gnt-instance modify --disk g0:remove vm", "gnt-instance modify --disk 0:modify,name=vm-disk0 vm"]


@pytest.mark.parametrize(("disks", "images", "kw", "match"), [
    ([grnet(0, rbd_pool="rbd")], {"vm-disk0"}, {"running": True}, "is running: stop it first"),
    ([grnet(0, rbd_pool="rbd")], {"vm-disk0"}, {"wipe": True}, "prealloc_wipe_disks is on"),
    ([replace(disk(0), dev_type="rbd", params={}), replace(disk(1), dev_type="plain", params={})], {"v0"}, {},
     "mixes plain and rbd disks"),
    ([replace(disk(0), dev_type="plain", params={})], {"v0"}, {}, "is a plain disk"),
    ([replace(disk(0), params={"provider": "other"})], {"v0"}, {}, "is an ext disk of provider other"),
    ([grnet(0, rbd_pool="rbd")], set(), {}, "image rbd/vm-disk0 does not exist and no adoption of it"),
    ([grnet(0)], set(), {}, "image rbd/g0.ext.disk0 does not exist, and the disk is not one of GRNET's"),
])
def test_refusals_change_nothing(disks: list[Disk], images: set[str], kw: dict, match: str) -> None:
    g, imgs = bed(*disks, images=images, **kw)
    with pytest.raises(Refused, match=match):
        cv.convert("vm", ganeti=g, images=imgs)  # type: ignore[arg-type]
    assert g.calls == [] and not g.deactivated and imgs.names == images


def test_an_image_in_use_is_refused() -> None:
    g, images = bed(grnet(0, rbd_pool="rbd"), images={"vm-disk0"})
    images.watched["vm-disk0"] = ["10.0.0.5:0/123"]  # type: ignore[attr-defined]
    with pytest.raises(Refused, match=r"image rbd/vm-disk0 is in use \(watched by 10.0.0.5:0/123\): GRNET's"):
        cv.convert("vm", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == [] and not g.deactivated


def test_a_grnet_disk_without_parameters_is_told_apart_in_ceph() -> None:
    g, images = bed(grnet(0), images={"vm-disk0"})
    assert cv.convert("vm", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert [(d.name, d.volume) for d in g.disks] == [("vm-disk0", "v100")]


def test_a_run_killed_after_its_add_is_finished_by_a_rerun() -> None:
    g, images = bed(grnet(0, rbd_pool="rbd"), images={"vm-disk0"})
    g.fail = "g0:remove"
    with pytest.raises(GanetiFailed, match=r"converted: none; disk/0 failed: g0:remove failed: boom; to finish it run: "
                                           r"gnt-instance modify --disk g0:remove vm; .*then run: gnt-storage "
                                           r"rbd-convert vm$"):
        cv.convert("vm", ganeti=g, images=images)  # type: ignore[arg-type]
    assert [d.volume for d in g.disks] == ["v100", "g0.ext.disk0"]
    g.fail = ""
    with pytest.raises(Refused, match="interrupted run; a run without --dry-run removes it"):
        cv.convert("vm", dry_run=True, ganeti=g, images=images)  # type: ignore[arg-type]
    assert cv.convert("vm", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert [(d.name, d.volume) for d in g.disks] == [("vm-disk0", "v100")] and images.names == {"v100"}
    assert g.calls[-2:] == ["g0:remove", "u100:modify,name=vm-disk0"]


def test_an_adoption_stopped_after_its_rename_is_resumed() -> None:
    g, images = bed(grnet(0, rbd_pool="rbd"), images={"vm-disk0"}, fail="0:add", halfway=True)
    with pytest.raises(GanetiFailed, match=r"image rbd/vm-disk0 is now rbd/v100, which a new run completes; to "
                                           r"finish it run: gnt-storage rbd-convert vm$"):
        cv.convert("vm", ganeti=g, images=images)  # type: ignore[arg-type]
    g.fail = ""
    assert cv.convert("vm", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert [(d.name, d.volume) for d in g.disks] == [("vm-disk0", "v101")] and images.names == {"v101"}
    assert images.records["v101"] == {"from": "vm-disk0", "to": "v101", "done": True}


def test_cli_dispatches_rbd_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    from gnt_storage import cli

    assert "rbd-convert" in cli.OURS
    args = cli.build_parser().parse_args(["rbd-convert", "vm", "--dry-run"])
    assert (args.instance, args.dry_run) == ("vm", True)
    seen: list[tuple] = []
    monkeypatch.setattr(cv, "convert", lambda name, dry_run=False: seen.append((name, dry_run)) or 0)
    assert cli.main(["rbd-convert", "vm"]) == 0 and seen == [("vm", False)]


def test_a_second_run_is_refused_while_rbd_access_or_another_convert_holds_the_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review S7 #1: the lock is one per instance, shared by rbd-convert's two paths and rbd-access."""
    import os

    from ganeti_ceph.rbd import access_switch as sw
    from tests.unit.test_access_switch import hold_lock

    monkeypatch.setattr(sw, "LOCK_WAIT", 0.05)
    template = replace(disk(0), dev_type="rbd", params={})
    for disks in ([grnet(0, rbd_pool="rbd")], [template]):
        g, images = bed(*disks, images={"vm-disk0", "v0"})
        fd = hold_lock(g, "77")
        try:
            with pytest.raises(Refused, match=r"^another rbd-convert/rbd-access of vm is running \(pid 77\)"):
                cv.convert("vm", ganeti=g, images=images)  # type: ignore[arg-type]
        finally:
            os.close(fd)
        assert g.calls == [] and not g.deactivated and os.listdir(g.state_dir) == ["locks"]



def test_the_old_entry_is_kept_while_an_image_of_its_own_volume_name_exists() -> None:
    """Our provider's remove of GRNET's old entry reaches the image named after its VOL_NAME: when one exists,
    the remove would delete it (or, refused, Ganeti would drop the entry and leave it attached to nothing)."""
    g, images = bed(grnet(0, rbd_pool="rbd"), images={"vm-disk0", "g0.ext.disk0"})
    with pytest.raises(GanetiFailed, match=r"but the name rbd/g0.ext.disk0 still opens an image .* not removing"):
        cv.convert("vm", ganeti=g, images=images)  # type: ignore[arg-type]
    assert len(g.calls) == 1 and "g0.ext.disk0" in images.names
