"""gnt-storage rbd-access without Ganeti: parsing Ganeti's state, the commands, and the switch against fakes."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
from dataclasses import replace

import pytest

from ganeti_ceph.errors import UsageError
from ganeti_ceph.rbd import access_switch as sw
from ganeti_ceph.rbd.access_switch import SEP, Disk, GanetiFailed, Instance, Refused

INST_UUID = "i-uuid"


def config(disks: list[dict], cluster_access: str = "kernelspace", group_access: str | None = None) -> dict:
    """The parts of Ganeti's config.data the switch reads."""
    group = {"diskparams": {"ext": {"access": group_access}} if group_access else {}}
    return {
        "version": 3000000,
        "cluster": {"diskparams": {"ext": {"access": cluster_access}, "plain": {}}},
        "nodegroups": {"g1": group}, "nodes": {"n1": {"group": "g1"}},
        "instances": {INST_UUID: {"disks": [d["uuid"] for d in disks], "primary_node": "n1"}},
        "disks": {d["uuid"]: d for d in disks},
    }


def ext(uuid: str, vol: str, size: int = 256, name: str | None = None, **params: str) -> dict:
    return {"uuid": uuid, "dev_type": "ext", "logical_id": ["rbd", vol], "size": size, "mode": "rw", "name": name,
            "params": {"provider": "rbd", **params}}


def line(uuids: list[str], oper: str = "N", admin: str = "down", hv: str = "kvm") -> str:
    return SEP.join(["vm1.example", INST_UUID, "ADMIN_down", oper, admin, hv, repr(uuids)]) + "\n"


def test_parse_instance_orders_disks_and_fills_access_like_ganeti() -> None:
    cfg = config([ext("d2", "v2", access="userspace", pool="fast"), ext("d1", "v1", name="root"),
                  {"uuid": "d3", "dev_type": "plain", "logical_id": ["vg", "lv"], "size": 8, "mode": "ro",
                   "params": {}}], group_access="userspace")
    inst = sw.parse_instance(line(["d2", "d1", "d3"]), cfg)
    assert (inst.name, inst.running, inst.admin_state, inst.hypervisor) == ("vm1.example", False, "down", "kvm")
    assert [(d.index, d.uuid, d.volume, d.access, d.is_rbd) for d in inst.disks] == [
        (0, "d2", "v2", "userspace", True), (1, "d1", "v1", "userspace", True), (2, "d3", "lv", "kernelspace", False)]
    assert inst.disks[1].name == "root" and inst.disks[0].params["pool"] == "fast"
    assert sw.parse_instance(line(["d1"]), config([ext("d1", "v1")])).disks[0].access == "kernelspace"


@pytest.mark.parametrize("text", ["vm1" + SEP + "x", line(["d1"]).replace(repr(["d1"]), "[oops")])
def test_parse_instance_refuses_odd_output(text: str) -> None:
    with pytest.raises(GanetiFailed):
        sw.parse_instance(text, config([ext("d1", "v1")]))


def test_a_stale_config_is_noticed() -> None:
    with pytest.raises(GanetiFailed, match="does not match"):
        sw.parse_instance(line(["d1", "d9"]), config([ext("d1", "v1")]))


def test_oper_state_unknown_is_none() -> None:
    assert sw.parse_instance(line(["d1"], oper="*unknown*"), config([ext("d1", "v1")])).running is None


def disk(index: int = 0, name: str | None = None, mode: str = "rw", **params: str) -> Disk:
    return Disk(index=index, uuid=f"u{index}", dev_type="ext", size_mib=256, mode=mode, name=name, volume=f"v{index}",
                params={"provider": "rbd", **params}, access=params.get("access", "kernelspace"))


def test_add_spec_carries_parameters_but_not_access_origin_or_adopt() -> None:
    d = disk(2, mode="ro", pool="p1", features="layering,exclusive-lock", origin="t@s", adopt_image="x",
             access="kernelspace")
    assert sw.add_spec(d, "userspace") == (
        r"2:add,size=256M,provider=rbd,access=userspace,adopt_image=v2,mode=ro,features=layering\,exclusive-lock,"
        "pool=p1")


def test_commands_insert_at_the_index_remove_the_next_and_restore_the_name() -> None:
    assert sw.commands("vm", disk(1, name="da,ta"), "userspace") == [
        ["gnt-instance", "modify", "--disk", "1:add,size=256M,provider=rbd,access=userspace,adopt_image=v1", "vm"],
        ["gnt-instance", "modify", "--disk", "u1:remove", "vm"],
        ["gnt-instance", "modify", "--disk", r"1:modify,name=da\,ta", "vm"]]
    assert len(sw.commands("vm", disk(0), "userspace")) == 2


def test_condense_keeps_ganetis_last_words() -> None:
    res = subprocess.CompletedProcess([], 1, "Waiting for job 5 ...\n", "Failure: prerequisites not met\n"
                                      "error type: wrong_state\n  disk name 'a' already used\n")
    assert sw.condense(res) == "Failure: prerequisites not met error type: wrong_state disk name 'a' already used"
    assert sw.condense(subprocess.CompletedProcess([], 3, "", "")) == "exit 3"


# -- the switch, against a fake Ganeti and a fake Ceph ---------------------------------------------------------------

@pytest.fixture(autouse=True)
def _journals_in_tmp_path(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FakeGaneti's journal dirs (tempfile.mkdtemp) under the test's tmp_path, which pytest cleans up:
    in /tmp they were left behind, hundreds a run."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


class FakeImages:
    """Image names, and the adoption records (ganeti.adopt) that ganeti_ceph.rbd.volumes.adopt writes."""

    def __init__(self, names: set[str]) -> None:
        self.names = set(names)
        self.data = set(names)  # the images holding data (the disks' own); a new image holds none
        self.records: dict[str, dict] = {}
        self.closed = False

    def pool_of(self, disk: Disk) -> str:
        return disk.params.get("pool") or "rbd"

    def exists(self, pool: str, image: str) -> bool:
        return image in self.names

    def interrupted(self, pool: str, image: str) -> str | None:
        return next((n for n, r in self.records.items() if n in self.names and r == {"from": image, "to": n,
                                                                                      "done": False}), None)

    def adopted_from(self, pool: str, image: str) -> str | None:
        rec = self.records.get(image, {})
        return rec["from"] if rec.get("done") else None

    def unproven_empty(self, pool: str, image: str) -> str | None:
        if image in self.records:
            return "carries an adoption record"
        return "holds data" if image in self.data else None

    def adopt(self, old: str, new: str, stop_after_rename: bool = False) -> None:
        """As volumes.adopt: resume an interrupted adoption of `old`, else rename `old`; record done last."""
        source = self.interrupted("rbd", old) or old
        self.names.discard(source)
        self.names.add(new)
        if source in self.data:
            self.data.discard(source)
            self.data.add(new)
        self.records.pop(source, None)
        self.records[new] = {"from": old, "to": new, "done": not stop_after_rename}

    def close(self) -> None:
        self.closed = True


class FakeGaneti(sw.Ganeti):
    """Applies the --disk add/remove/modify calls to an in-memory disk list, as Ganeti and the provider would."""

    def __init__(self, disks: list[Disk], images: FakeImages, adopts: bool = True, fail: str = "",
                 wipe: bool | None = False, halfway: bool = False, stale: bool = False, made: str = "",
                 **state: object) -> None:
        self.disks, self.images, self.adopts, self.fail = list(disks), images, adopts, fail
        self.wipe, self.halfway = wipe, halfway  # halfway: the failing add's adopt stops after its rename
        self.stale = stale  # the add's rename leaves the old name opening the same image (librbd cut short)
        self.made = made  # what the image of an add that did not adopt holds: "data", an adoption "record", or ""
        self.state = {"running": False, "admin_state": "down", "hypervisor": "kvm", **state}
        self.calls: list[str] = []
        self.deactivated = False
        self.ids = itertools.count(100)
        self.state_dir = tempfile.mkdtemp(prefix="rbd-convert-")  # the journals
        self.lock_dir = os.path.join(self.state_dir, "locks")

    def check_master(self) -> None:
        pass

    def wipes_new_disks(self) -> bool | None:
        return self.wipe

    def instance(self, name: str) -> Instance:
        if name != "vm":
            raise Refused(f"instance {name} does not exist")
        disks = tuple(replace(d, index=i) for i, d in enumerate(self.disks))
        return Instance("vm", INST_UUID, "ADMIN_down", disks=disks, **self.state)  # type: ignore[arg-type]

    def run(self, argv: list[str]) -> None:
        if argv[1] == "deactivate-disks":
            self.deactivated = True
            return
        spec = argv[3]
        self.calls.append(spec)
        idx, _, rest = spec.partition(":")
        action, *kv = rest.split(",")
        params = dict(p.split("=", 1) for p in kv)
        i = self.position(idx, action)
        if self.fail and self.fail in spec:
            if self.halfway:  # the provider renamed the image, then died before its metadata
                self.images.adopt(params["adopt_image"], f"v{next(self.ids)}", stop_after_rename=True)
            raise GanetiFailed(f"{spec} failed: boom")
        if action == "add":
            n = next(self.ids)
            vol, old = f"v{n}", params.pop("adopt_image")
            if self.adopts:
                self.images.adopt(old, vol)
                if self.stale:
                    self.images.names.add(old)
            elif self.made == "data":
                self.images.data.add(vol)
            elif self.made == "record":
                self.images.records[vol] = {"from": "elsewhere", "to": vol, "done": True}
            self.images.names.add(vol)
            size = int(params.pop("size").rstrip("M"))
            self.disks.insert(i, Disk(i, f"u{n}", "ext", size, "rw", None, vol, params, params["access"]))
        elif action == "remove":
            self.images.names.discard(self.disks.pop(i).volume)  # the provider's remove, if attach works
        else:
            self.disks[i] = replace(self.disks[i], name=params["name"])


    def position(self, ident: str, action: str) -> int:
        """As Ganeti's GetIndexFromIdentifier (add) and GetItemFromContainer (the rest): index, UUID or name."""
        if ident.isdigit() or action == "add":
            return int(ident)
        found = [i for i, d in enumerate(self.disks) if ident in (d.uuid, d.name)]
        if not found:
            raise GanetiFailed(f"Cannot find disk with identifier {ident}")
        return found[0]


def setup(*disks: Disk, **kw: object) -> tuple[FakeGaneti, FakeImages]:
    images = FakeImages({d.volume for d in disks})
    return FakeGaneti(list(disks), images, **kw), images  # type: ignore[arg-type]


def test_switch_keeps_data_order_and_names(capsys: pytest.CaptureFixture[str]) -> None:
    g, images = setup(disk(0, name="root"), disk(1, access="userspace"), disk(2, pool="rbd"))
    assert sw.switch("vm", "userspace", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert g.calls == ["0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0", "u0:remove",
                       "u100:modify,name=root", "2:add,size=256M,provider=rbd,access=userspace,adopt_image=v2,pool=rbd",
                       "u2:remove"]
    assert [(d.name, d.access) for d in g.disks] == [("root", "userspace"), (None, "userspace"), (None, "userspace")]
    assert images.names == {"v100", "v1", "v101"} and images.closed and g.deactivated
    assert capsys.readouterr().out == "vm: disk/0, disk/2 switched to userspace\n"


def test_already_in_mode_is_a_no_op(capsys: pytest.CaptureFixture[str]) -> None:
    g, images = setup(disk(0, access="userspace"))
    assert sw.switch("vm", "userspace", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert g.calls == [] and "already use userspace" in capsys.readouterr().out


def test_dry_run_prints_and_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    g, images = setup(disk(0, name="root"))
    assert sw.switch("vm", "userspace", dry_run=True, ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert g.calls == []
    assert capsys.readouterr().out.splitlines() == [
        "gnt-instance deactivate-disks vm",
        "gnt-instance modify --disk 0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0 vm",
        "gnt-instance modify --disk u0:remove vm", "gnt-instance modify --disk 0:modify,name=root vm"]


@pytest.mark.parametrize(("kw", "name", "mode", "match"), [
    ({"running": True}, "vm", "userspace", "is running: stop it first"),
    ({"running": None}, "vm", "userspace", "cannot tell"),
    ({"admin_state": "up"}, "vm", "userspace", "meant to run"),
    ({"hypervisor": "xen-pvm"}, "vm", "userspace", "needs the kvm hypervisor"),
    ({}, "other", "userspace", "does not exist"),
])
def test_refusals_change_nothing(kw: dict, name: str, mode: str, match: str) -> None:
    g, images = setup(disk(0), **kw)
    with pytest.raises(Refused, match=match):
        sw.switch(name, mode, ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == []


def test_invalid_mode_and_no_rbd_disks() -> None:
    with pytest.raises(UsageError, match="not valid"):
        sw.switch("vm", "userland")
    g, images = setup(replace(disk(0), params={"provider": "other"}))
    with pytest.raises(Refused, match="no disks of the rbd"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]


def test_an_entry_left_by_an_interrupted_switch_is_named_only_when_proven() -> None:
    """The tool killed between the add and the remove: disk/0 holds the data, adopted from disk/1's image."""
    g, images = setup(disk(0, access="userspace"), disk(1))
    images.names.discard("v1")
    with pytest.raises(Refused, match=r"no adoption of it was found; find its data first"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    images.records["v0"] = {"from": "v1", "to": "v0", "done": True}
    with pytest.raises(Refused, match=r"v1 does not exist: disk/0 adopted it .*--disk u1:remove vm$"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == []


def test_an_adoption_stopped_after_its_rename_is_completed_by_the_printed_command() -> None:
    """Before the fix: "nothing changed for it", and the re-run refused and advised dropping the only entry."""
    g, images = setup(disk(0, name="root"), fail="0:add", halfway=True)
    with pytest.raises(GanetiFailed) as err:
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert err.value.message == (
        "vm: switched to userspace: none; disk/0 failed: 0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0 "
        "failed: boom; the adoption stopped halfway: image rbd/v0 is now rbd/v100, which a new run completes; "
        "to finish it run: gnt-storage rbd-access vm userspace")
    assert images.names == {"v100"} and [d.volume for d in g.disks] == ["v0"]
    g.fail = ""
    assert sw.switch("vm", "userspace", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert [(d.name, d.access, d.volume) for d in g.disks] == [("root", "userspace", "v101")]
    assert images.names == {"v101"} and images.records["v101"] == {"from": "v0", "to": "v101", "done": True}


def test_an_interrupted_adoption_of_a_disk_not_to_switch_is_refused_with_the_undo() -> None:
    g, images = setup(disk(0), disk(1, access="userspace"))
    images.adopt("v1", "t9", stop_after_rename=True)
    with pytest.raises(Refused, match=r"v1 does not exist: an interrupted adoption left it as rbd/t9; to undo that: "
                                      r"rbd rename rbd/t9 rbd/v1$"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == []


@pytest.mark.parametrize(("wipe", "match"), [(True, "prealloc_wipe_disks is on .*--prealloc-wipe-disks no"),
                                             (None, "cannot read prealloc_wipe_disks")])
def test_refused_while_ganeti_would_wipe_the_adopted_images(wipe: bool | None, match: str) -> None:
    g, images = setup(disk(0), wipe=wipe)
    with pytest.raises(Refused, match=match):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    with pytest.raises(Refused, match=match):
        sw.switch("vm", "userspace", dry_run=True, ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == [] and not g.deactivated and images.names == {"v0"}


def test_the_wipe_setting_as_the_provider_and_the_switch_read_it(tmp_path) -> None:
    from ganeti_ceph.rbd import prealloc_wipe as pw

    lib = str(tmp_path)
    assert pw.wipes_new_disks(lib) is False  # no Ganeti cluster on this host: nothing wipes
    (tmp_path / "ssconf_cluster_name").write_text("c\n")
    assert pw.wipes_new_disks(lib) is None  # a node without config.data (not a master candidate)
    with pytest.raises(UsageError, match="cannot tell whether Ganeti's prealloc_wipe_disks"):
        pw.refuse_if_wiped("x", lib)
    for text, want in (("{", None), ("[]", None), ('{"cluster": {}}', False),
                       ('{"cluster": {"prealloc_wipe_disks": false}}', False),
                       ('{"cluster": {"prealloc_wipe_disks": true}}', True)):
        (tmp_path / "config.data").write_text(text)
        assert pw.wipes_new_disks(lib) is want, text
    with pytest.raises(UsageError, match=r"is on and would zero the adopted image rbd/v0 .*modify --prealloc-wipe"):
        pw.refuse_if_wiped("the adopted image rbd/v0", lib)
    (tmp_path / "config.data").write_text('{"cluster": {"prealloc_wipe_disks": false}}')
    pw.refuse_if_wiped("x", lib)


def test_failure_midway_says_what_was_switched_and_how_to_finish() -> None:
    g, images = setup(disk(0, name="root"), disk(1))
    g.fail = "u1:remove"
    with pytest.raises(GanetiFailed) as err:
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert err.value.message == (
        "vm: switched to userspace: disk/0; disk/1 failed: u1:remove failed: boom; to finish it run: "
        "gnt-instance modify --disk u1:remove vm; then run: gnt-storage rbd-access vm userspace")
    assert images.closed


def test_a_failed_add_changed_nothing_for_that_disk() -> None:
    g, images = setup(disk(0))
    g.fail = "0:add"
    with pytest.raises(GanetiFailed, match=r"switched to userspace: none; disk/0 failed: .*nothing changed for it; "
                                           r"then run: gnt-storage rbd-access vm userspace"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]


def test_an_add_that_did_not_adopt_is_rolled_back_before_anything_is_removed() -> None:
    """Ganeti drops disk parameters named like its own: the old disk must then survive, with its image."""
    g, images = setup(disk(0, name="root"), adopts=False)
    with pytest.raises(GanetiFailed, match="did not hand adopt_image= to the provider") as err:
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert "then run" not in err.value.message
    assert g.calls == ["0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0", "u100:remove"]
    assert [(d.uuid, d.name) for d in g.disks] == [("u0", "root")] and images.names == {"v0"}


def test_an_adoption_whose_old_name_still_opens_is_neither_undone_nor_removed() -> None:
    """Review I, R7: the add adopted the image (the new image's record says so), but a rename cut short inside
    librbd left the old name opening it too. Before the fix the switch took "the old name opens" for "not
    adopted" and removed the new disk, i.e. the adopted data. Now the new image's record decides: no undo, and
    no remove of the old entry either (that remove would open the same image through the old name)."""
    g, images = setup(disk(0, name="root"), stale=True)
    with pytest.raises(GanetiFailed) as err:
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == ["0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0"]
    assert [d.volume for d in g.disks] == ["v100", "v0"] and "v100" in images.data
    assert ("disk/0 (rbd/v100) holds the data, adopted from rbd/v0, but the name rbd/v0 still opens an image"
            in err.value.message), err.value.message
    assert err.value.message.endswith("to finish it run: gnt-instance modify --disk u0:remove vm; gnt-instance modify "
                                      "--disk u100:modify,name=root vm; then run: gnt-storage rbd-access vm userspace")


@pytest.mark.parametrize(("why", "match"), [("data", r"rbd/v100\) holds data: removing nothing"),
                                            ("record", r"rbd/v100\) carries an adoption record: removing nothing")])
def test_a_new_disk_not_proven_empty_is_never_taken_out(why: str, match: str) -> None:
    """Review I, R7: the add's image records no adoption of the old one, but it is not provably a new, empty
    image (it holds data, or records another adoption): the switch stops and removes nothing. Before the fix it
    removed it because the old name still opened."""
    g, images = setup(disk(0), adopts=False, made=why)
    with pytest.raises(GanetiFailed, match=match):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == ["0:add,size=256M,provider=rbd,access=userspace,adopt_image=v0"]
    assert {"v0", "v100"} <= images.names


def test_cli_dispatches_rbd_access() -> None:
    from gnt_storage import cli

    assert "rbd-access" in cli.OURS
    with pytest.raises(UsageError, match="'sideways' is not valid"):
        cli.main(["rbd-access", "vm", "sideways"])
    args = cli.build_parser().parse_args(["rbd-access", "vm", "userspace", "--dry-run"])
    assert (args.instance, args.mode, args.dry_run) == ("vm", "userspace", True)


def test_ganeti_reads_list_and_config_data(tmp_path) -> None:
    (tmp_path / "config.data").write_text(json.dumps(config([ext("d1", "v1", name="root")])))
    (tmp_path / "ssconf_master_node").write_text("elsewhere.example\n")
    seen: list[list[str]] = []

    def runner(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
        seen.append(argv)
        if argv[-1] == "vm":
            return subprocess.CompletedProcess(argv, 0, line(["d1"]), "")
        return subprocess.CompletedProcess(argv, 1, "", "Failure: prerequisites not met for this operation:\n"
                                           "error type: unknown_entity, error details:\nInstance name x not found\n")

    g = sw.Ganeti(runner, str(tmp_path))
    assert [(d.name, d.volume, d.access) for d in g.instance("vm").disks] == [("root", "v1", "kernelspace")]
    assert seen[0][:4] == ["gnt-instance", "list", "--no-headers", f"--separator={SEP}"]
    with pytest.raises(Refused, match="instance x does not exist"):
        g.instance("x")
    with pytest.raises(Refused, match="run this on the Ganeti master, elsewhere"):
        g.check_master()


# -- review S7: two runs on one instance, and disks named by UUID -----------------------------------------------------

def hold_lock(g: FakeGaneti, pid: str = "4242") -> int:
    """Take the instance's lock as another run would (a second open file description: flock conflicts)."""
    import fcntl

    os.makedirs(g.lock_dir, exist_ok=True)
    fd = os.open(os.path.join(g.lock_dir, f"{INST_UUID}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_second_run_on_the_instance_is_refused_while_the_first_holds_its_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review S7 #1: no lock, so a rerun could remove by index a disk the first run had just attached."""

    monkeypatch.setattr(sw, "LOCK_WAIT", 0.05)
    g, images = setup(disk(0, name="root"))
    fd = hold_lock(g)
    try:
        for dry_run in (False, True):
            with pytest.raises(Refused, match=r"^another rbd-convert/rbd-access of vm is running \(pid 4242\); "
                                              r"wait for it$"):
                sw.switch("vm", "userspace", dry_run=dry_run, ganeti=g, images=images)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert g.calls == [] and not g.deactivated and images.names == {"v0"}
    assert sw.switch("vm", "userspace", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    with open(os.path.join(g.lock_dir, f"{INST_UUID}.lock")) as fh:
        assert fh.read() == f"{os.getpid()}\n"


def test_an_unwritable_lock_directory_is_one_line(tmp_path) -> None:
    g, images = setup(disk(0))
    (tmp_path / "file").write_text("")
    g.lock_dir = str(tmp_path / "file")
    with pytest.raises(GanetiFailed, match=r"cannot open the lock .*file/i-uuid.lock: .*; make .* writable"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert g.calls == []


class Reshuffled(FakeGaneti):
    """Another change lands right before the switch's remove: a disk is inserted at index 0 (what a concurrent
    run's attach does to the indices this run read)."""

    def run(self, argv: list[str]) -> None:
        if argv[-2].endswith(":remove") and not any(d.uuid == "x0" for d in self.disks):
            self.disks.insert(0, Disk(0, "x0", "ext", 64, "rw", None, "vx", {"provider": "rbd"}, "kernelspace"))
            self.images.names.add("vx")
        super().run(argv)


def test_the_old_entry_is_removed_by_uuid_so_a_changed_disk_list_never_removes_the_adopted_disk() -> None:
    """Review S7 #1: removing by index (then `1:remove`) would have removed the new disk, which now sits at
    index 1, and with it the adopted image v100."""
    images = FakeImages({"v0"})
    g = Reshuffled([disk(0, name="root")], images)
    assert sw.switch("vm", "userspace", ganeti=g, images=images) == 0  # type: ignore[arg-type]
    assert [(d.uuid, d.name, d.volume) for d in g.disks] == [("x0", None, "vx"), ("u100", "root", "v100")]
    assert images.names == {"vx", "v100"} and images.records["v100"]["from"] == "v0"


class PoolImages(FakeImages):
    """Adoption records live in a pool: the default `rbd` unless a disk names one."""

    def adopted_from(self, pool: str, image: str) -> str | None:
        return super().adopted_from(pool, image) if pool == "rbd" else None


def test_the_adoption_hint_looks_in_the_adopting_disk_s_own_pool() -> None:
    """Review S7 #6: disk/0 (default pool) adopted disk/1's image; before the fix its record was looked up in
    disk/1's pool (`slow`), so the hint was missed."""
    images = PoolImages({"v0"})
    images.records["v0"] = {"from": "v1", "to": "v0", "done": True}
    g = FakeGaneti([disk(0, access="userspace"), disk(1, pool="slow")], images)
    with pytest.raises(Refused, match=r"disk/0 adopted it .*--disk u1:remove vm$"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]


def test_an_undo_whose_image_survives_says_it_is_attached_to_nothing() -> None:
    """Ganeti drops a removed disk's entry even when the provider's remove fails: say what that left."""
    g, images = setup(disk(0), adopts=False)
    original = g.run

    def refusing(argv: list[str]) -> None:
        vol = g.disks[0].volume if argv[-2] == "u100:remove" else None
        original(argv)
        if vol:
            images.names.add(vol)  # the provider refused: the entry went, the image stayed

    g.run = refusing  # type: ignore[method-assign]
    with pytest.raises(GanetiFailed, match=r"its empty image rbd/v100 is left, attached to nothing: rbd rm it"):
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]


def test_a_failed_read_after_the_add_names_the_new_disk_by_uuid_not_index() -> None:
    """The undo hint for a disk list that could not be read back: an index may name another disk by the
    time the admin runs it (Ganeti's remove would delete that disk's image), so it says where the UUID is."""
    g, images = setup(disk(0))
    read = g.instance

    def instance(name: str) -> Instance:
        if g.calls:  # the add went through
            raise GanetiFailed("gnt-instance list failed: boom")
        return read(name)

    g.instance = instance  # type: ignore[method-assign]
    with pytest.raises(GanetiFailed) as err:
        sw.switch("vm", "userspace", ganeti=g, images=images)  # type: ignore[arg-type]
    assert "--disk 0:remove" not in err.value.message
    assert "'<UUID of disk/0 in gnt-instance info vm>:remove'" in err.value.message
