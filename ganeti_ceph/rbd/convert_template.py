"""`gnt-storage rbd-convert` of an instance of Ganeti's own `-t rbd` template: its images become ext disks of
the rbd provider without copying, through a carrier instance (doc/convert.md).

Ganeti 3.0 adds to an instance only disks of its own template and attaches another template's disk only to a
diskless instance (cmdlib/instance_set_params.py: _CreateNewDisk, _CheckAttachDisk). So a carrier `-t ext`
instance, `<short name>-rbd-convert`, on the same primary node, gets one disk per rbd disk, each adopting
(renaming) that disk's image, one job each (a failed multi-disk add would make Ganeti remove the disks already
made, adopted data included; so would a failed wait for sync: --no-wait-for-sync); its disks are detached and
the diskless carrier removed; the instance's rbd entries are removed (their images are gone under the old
names: Ganeti's RADOSBlockDevice cannot map them, so its remove drops only the entry; each is proven gone right
before); the ext disks are attached in the original order and given the old names.
Size, mode and access are carried.

The plan (the disks in order, with their images) is written to a journal on the master before the first
change and dropped after the last. Every step is found done or not from Ganeti and Ceph themselves (an ext disk
whose image records the adoption of a planned image is that image's new disk), so a rerun resumes wherever a
run stopped.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import asdict, dataclass

from ganeti_ceph import atomic
from ganeti_ceph.errors import GanetiCephError, GanetiFailed
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.log import progress
from ganeti_ceph.naming import ADOPT_PARAM
from ganeti_ceph.rbd.access_switch import (
    PROVIDER,
    STATE_DIR,
    CephImages,
    Ganeti,
    Instance,
    Move,
    Refused,
    add_failed,
    check_wipe,
    esc,
    modify,
    move_spec,
)
from ganeti_ceph.rbd.volumes import META_UUID

JOURNAL_DIR = STATE_DIR
SUFFIX = "-rbd-convert"


def carrier_name(instance: str) -> str:
    """`web1.example.org` -> `web1-rbd-convert.example.org`: the carrier sits in the instance's domain."""
    head, dot, tail = instance.partition(".")
    return f"{head}{SUFFIX}{dot}{tail}"


@dataclass(frozen=True)
class Planned:
    """One rbd disk as it was before the conversion; `image` is its RBD image (its logical_id's volume)."""

    uuid: str
    name: str | None
    mode: str
    size_mib: int
    pool: str
    image: str
    access: str


@dataclass(frozen=True)
class Plan:
    instance: str
    uuid: str
    carrier: str
    node: str
    os: str
    hypervisor: str
    disks: tuple[Planned, ...]

    def move(self, k: int) -> Move:
        """The carrier's disk for planned disk k, as the access switch adds one (only the index differs)."""
        p = self.disks[k]
        disk = Disk(k, p.uuid, "ext", p.size_mib, p.mode, p.name, p.image, {}, p.access)
        return Move(disk, p.pool, p.image, p.access, {"pool": p.pool}, f"gnt-storage rbd-convert {self.instance}")


class Journal:
    """The plan of an unfinished conversion, one file per instance UUID on the master."""

    def __init__(self, directory: str = JOURNAL_DIR) -> None:
        self.directory = directory

    def path(self, uuid: str) -> str:
        return os.path.join(self.directory, f"{uuid}.json")

    def load(self, uuid: str) -> Plan | None:
        try:
            with open(self.path(uuid)) as fh:
                raw = json.load(fh)
            return Plan(**{**raw, "disks": tuple(Planned(**d) for d in raw["disks"])})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise GanetiFailed(f"cannot read the rbd-convert journal {self.path(uuid)}: {exc}") from None

    def save(self, plan: Plan) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            atomic.write(self.path(plan.uuid), json.dumps(asdict(plan), indent=1, sort_keys=True) + "\n", 0o600)
        except OSError as exc:
            raise GanetiFailed(f"cannot write the rbd-convert journal {self.path(plan.uuid)}: {exc.strerror}; "
                               f"nothing changed yet: make room on (or remount read-write) {self.directory}'s file "
                               "system, then rerun") from None

    def drop(self, uuid: str) -> None:
        """After the last step; a journal already gone is dropped (nothing is left to resume either way)."""
        try:
            os.unlink(self.path(uuid))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise GanetiFailed(f"the conversion is complete, but its journal {self.path(uuid)} could not be "
                               f"removed: {exc.strerror}; rm it, or a later rbd-convert would resume it") from None


def instance_or_none(ganeti: Ganeti, name: str) -> Instance | None:
    try:
        return ganeti.instance(name)
    except Refused:  # Ganeti does not know it
        return None


def rbd_pool(cfg: dict, inst_uuid: str, disk: dict) -> str:
    """A `-t rbd` disk's pool as Ganeti fills it in: disk, else node group, else cluster (pure)."""
    inst = cfg["instances"][inst_uuid]
    group = cfg.get("nodegroups", {}).get(cfg.get("nodes", {}).get(inst.get("primary_node"), {}).get("group"), {})
    for params in (disk.get("params") or {}, (group.get("diskparams") or {}).get("rbd", {}),
                   cfg["cluster"].get("diskparams", {}).get("rbd", {})):
        if params.get("pool"):
            return str(params["pool"])
    return "rbd"


def make_plan(ganeti: Ganeti, inst: Instance) -> Plan:
    cfg = ganeti.config()
    raw = cfg["instances"][inst.uuid]
    node = cfg["nodes"][raw["primary_node"]]["name"]
    disks = tuple(Planned(d.uuid, d.name, d.mode, d.size_mib, rbd_pool(cfg, inst.uuid, cfg["disks"][d.uuid]),
                          d.volume, d.access) for d in inst.disks)
    return Plan(inst.name, inst.uuid, carrier_name(inst.name), node, raw["os"], inst.hypervisor, disks)


@dataclass
class State:
    """Where each planned disk is now (read from Ganeti and Ceph, never from the journal)."""

    carrier: Instance | None
    instance: Instance
    new: list[str | None]  # per planned disk: the ext disk whose image records its adoption

    def carrier_disks(self) -> list[str]:
        return [d.uuid for d in self.carrier.disks] if self.carrier else []


def observe(ganeti: Ganeti, images: CephImages, plan: Plan) -> State:
    cfg = ganeti.config()
    carrier = instance_or_none(ganeti, plan.carrier)
    inst = ganeti.instance(plan.instance)
    attached = {u for i in cfg.get("instances", {}).values() for u in i.get("disks", [])}
    mine = {d.uuid for d in (carrier.disks if carrier else ())} | {d.uuid for d in inst.disks}
    new: list[str | None] = []
    for p in plan.disks:
        found = None
        for uuid, d in cfg.get("disks", {}).items():
            params = d.get("params") or {}
            if (uuid in mine or uuid not in attached) and d.get("dev_type") == "ext" and \
                    params.get("provider") == PROVIDER and params.get(ADOPT_PARAM) == p.image and \
                    images.adopted_from(images.pool(params.get("pool")), str(d["logical_id"][1])) == p.image:
                found = uuid
        new.append(found)
    return State(carrier, inst, new)


def refuse_fresh(ganeti: Ganeti, images: CephImages, inst: Instance, plan: Plan) -> None:
    """Every refusal of a first run, before anything changes (the disks' mappings aside)."""
    cfg = ganeti.config()
    enabled = cfg.get("cluster", {}).get("enabled_disk_templates") or []
    if "ext" not in enabled:
        raise Refused(f"Ganeti's ext disk template is not enabled (enabled: {', '.join(enabled) or 'none'}); the "
                      "converted disks are ext disks: gnt-cluster modify --enabled-disk-templates="
                      f"{','.join([*enabled, 'ext'])}, then rerun")
    diagnose = ["gnt-storage", "diagnose"]
    if not provider_valid(ganeti.output(diagnose), PROVIDER, cfg["instances"][inst.uuid]["primary_node"]):
        raise Refused(f"Ganeti finds no valid ExtStorage provider {PROVIDER} on {plan.node} "
                      f"({shlex.join(diagnose)}): install ganeti-ceph there first")
    if instance_or_none(ganeti, plan.carrier) is not None:
        raise Refused(f"an instance named {plan.carrier} exists; rbd-convert needs that name for its carrier "
                      f"instance: rename or remove it first (gnt-instance rename)")
    ganeti.run(["gnt-instance", "deactivate-disks", inst.name])  # Ganeti maps a -t rbd disk when it makes it
    for k, p in enumerate(plan.disks):
        where = f"disk/{k}: image {p.pool}/{p.image}"
        if not images.exists(p.pool, p.image):
            raise Refused(f"{where} does not exist; find its data first (rbd ls, rbd trash ls), change nothing "
                          "until then")
        if images.metadata(p.pool, p.image, META_UUID):
            raise Refused(f"{where} already carries the {PROVIDER} provider's metadata ({META_UUID}): another "
                          "ext disk may use it; find which (rbd image-meta list) before converting")
        if watched := images.watchers(p.pool, p.image):
            raise Refused(f"{where} is in use (watched by {', '.join(watched)}) although Ganeti unmapped it: "
                          "rbd showmapped and rbd unmap on each node, or close what opened it; nothing changed")


def provider_valid(text: str, provider: str, node: str) -> bool:
    """Whether Ganeti's `gnt-storage diagnose` output calls `provider` valid on `node`, by its UUID: Ganeti 3.0
    prints node UUIDs there (pure)."""
    current = None
    for line in text.splitlines():
        if line.startswith("Provider: "):
            current = line.removeprefix("Provider: ").strip()
        elif current == provider and line.strip().startswith(f"Node: {node}, status: valid"):
            return True
    return False


def step(ganeti: Ganeti, argv: list[str], what: str) -> None:
    progress(what)
    ganeti.run(argv)


def adopt_into_carrier(ganeti: Ganeti, images: CephImages, plan: Plan, state: State, k: int) -> None:
    """Give the carrier a disk adopting planned disk k's image (making the carrier with it when missing)."""
    m = plan.move(k)
    p = plan.disks[k]
    if state.carrier is None:
        spec = move_spec(m, "0:")
        # --ignore-ipolicy: the carrier's disk count or template may not be the policy's (refused after the
        # journal, it would leave "halfway converted" with nothing changed).
        argv = ["gnt-instance", "add", "-t", "ext", "-n", plan.node, "-o", plan.os, "--hypervisor",
                plan.hypervisor, "--no-install", "--no-start", "--no-name-check", "--no-ip-check", "--ignore-ipolicy",
                # Waiting for sync queries the disk; a failed query makes Ganeti remove it: the adopted data.
                "--no-wait-for-sync",
                "--disk", spec, plan.carrier]
        what = f"disk/{k} ({p.pool}/{p.image}): creating the carrier instance {plan.carrier}, its disk adopting it"
    else:
        n = len(state.carrier.disks)
        argv = modify(plan.carrier, move_spec(m, f"{n}:add,"), "--ignore-ipolicy")
        what = f"disk/{k} ({p.pool}/{p.image}): adding carrier disk/{n}, adopting it"
    try:
        step(ganeti, argv, what)
    except (GanetiCephError, KeyboardInterrupt) as exc:
        failed = add_failed(images, m, exc.message if isinstance(exc, GanetiCephError) else "interrupted")
        raise GanetiFailed(f"{plan.instance}: disk/{k} could not be adopted: {failed.cause}; then run: "
                           f"{m.again}") from exc


def run_plan(ganeti: Ganeti, images: CephImages, plan: Plan) -> None:
    """Each step only when `observe` says it is not yet done; see the module docstring."""
    state = observe(ganeti, images, plan)
    for k, p in enumerate(plan.disks):
        if state.new[k] is None:
            adopt_into_carrier(ganeti, images, plan, state, k)
            state = observe(ganeti, images, plan)
            if state.new[k] is None:
                raise GanetiFailed(f"{plan.instance}: the carrier's new disk records no adoption of {p.pool}/"
                                   f"{p.image}; changing nothing more: check gnt-instance info {plan.carrier} "
                                   f"and rbd image-meta list {p.pool}/<its volume>")
    new = [u for u in state.new if u]  # all planned disks: each was adopted above
    while state.carrier is not None and state.carrier.disks:
        stray = [d.uuid for d in state.carrier.disks if d.uuid not in new]
        if stray:
            raise GanetiFailed(f"carrier {plan.carrier} has disk(s) {', '.join(stray)} that are not the converted "
                               "ones; not detaching or removing it: check gnt-instance info " + plan.carrier)
        first = state.carrier.disks[0].uuid
        step(ganeti, modify(plan.carrier, f"{first}:detach"), f"detaching disk/0 ({first}) of {plan.carrier}")
        state = observe(ganeti, images, plan)
    if state.carrier is not None:
        step(ganeti, ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", plan.carrier],
             f"removing the carrier {plan.carrier}, now diskless")
    planned = [p.uuid for p in plan.disks]
    while old := [d for d in ganeti.instance(plan.instance).disks if d.uuid in planned]:
        d = old[0]
        p = plan.disks[planned.index(d.uuid)]
        if images.exists(p.pool, p.image):  # Ganeti's remove would delete the image under this name
            raise GanetiFailed(f"{plan.instance}: disk/{d.index}'s image {p.pool}/{p.image} exists again although "
                               "its data was adopted; not removing the disk (its remove would delete that image): "
                               f"compare rbd info {p.pool}/{p.image} with the adopted image, then rerun")
        step(ganeti, modify(plan.instance, f"{d.uuid}:remove"),
             f"removing the rbd entry disk/{d.index} ({p.pool}/{p.image}, adopted by an ext disk)")
    attach_all(ganeti, plan, new)
    disks = ganeti.instance(plan.instance).disks
    if [d.uuid for d in disks] != new:
        now = ", ".join(d.uuid for d in disks) or "none"
        raise GanetiFailed(f"{plan.instance}'s disks changed meanwhile (now {now}, not the converted "
                           f"{', '.join(new)}): check gnt-instance info {plan.instance}, then rerun")
    for k, (p, d) in enumerate(zip(plan.disks, disks, strict=True)):  # as long: disks == new
        if p.name and d.name != p.name:
            step(ganeti, modify(plan.instance, f"{d.uuid}:modify,name={esc(p.name)}"), f"naming disk/{k} {p.name}")
    # Ganeti's attach activated the disks: leave the stopped instance as unmapped as it was.
    ganeti.run(["gnt-instance", "deactivate-disks", plan.instance])


def attach_all(ganeti: Ganeti, plan: Plan, new: list[str]) -> None:
    """Attach the ext disks in the planned order, in one job on the diskless instance. Ganeti 3.0 attaches
    another template's disk only there, and asks an attach to an ext instance for a provider while refusing
    any parameter but uuid; so a partial attach (a job cut short) is detached again and redone whole. Its policy
    check counts an attached disk as none, which fails the disk-count minimum: --ignore-ipolicy."""
    disks = [d.uuid for d in ganeti.instance(plan.instance).disks]
    if disks == new:
        return
    if set(disks) - set(new):
        raise GanetiFailed(f"{plan.instance} has disk(s) {', '.join(sorted(set(disks) - set(new)))} that are not "
                           f"the converted ones; check gnt-instance info {plan.instance}")
    for uuid in disks:
        step(ganeti, modify(plan.instance, f"{uuid}:detach"), f"detaching {uuid} of {plan.instance}, attached early")
    specs = [a for k, uuid in enumerate(new) for a in ("--disk", f"{k}:attach,uuid={uuid}")]
    step(ganeti, ["gnt-instance", "modify", "--ignore-ipolicy", *specs, plan.instance],
         f"attaching the ext disks as disk/0..{len(new) - 1}")


def convert(inst: Instance, ganeti: Ganeti, images: CephImages, dry_run: bool, journal: Journal) -> int:
    """Convert the `-t rbd` instance `inst` (stopped, checked by the caller), or resume its conversion."""
    check_wipe(ganeti)
    plan = journal.load(inst.uuid)
    if plan is None:
        if not inst.disks:
            raise Refused(f"instance {inst.name} has no disks")
        kinds = sorted({d.dev_type for d in inst.disks})
        if kinds != ["rbd"]:
            raise Refused(f"instance {inst.name} mixes {' and '.join(kinds)} disks; rbd-convert takes an instance "
                          "whose disks are all of Ganeti's rbd template, or all GRNET's")
        plan = make_plan(ganeti, inst)
        if dry_run:
            print(f"{inst.name}: {len(plan.disks)} disk(s) of Ganeti's rbd template would move, through the "
                  f"carrier instance {plan.carrier}: " + "; ".join(
                      f"disk/{k} {shlex.quote(p.pool + '/' + p.image)}" for k, p in enumerate(plan.disks)))
            return 0
        refuse_fresh(ganeti, images, inst, plan)
        journal.save(plan)
    else:
        progress(f"{inst.name}: resuming the conversion its journal {journal.path(inst.uuid)} records")
        if dry_run:
            raise Refused(f"{inst.name} is halfway converted (journal {journal.path(inst.uuid)}); a run without "
                          "--dry-run finishes it")
    run_plan(ganeti, images, plan)
    journal.drop(inst.uuid)
    print(f"{inst.name}: {', '.join(f'disk/{k}' for k in range(len(plan.disks)))} converted from Ganeti's rbd "
          f"template to the {PROVIDER} provider")
    return 0


def wants(inst: Instance, journal: Journal | None = None) -> bool:
    """Whether rbd-convert of `inst` is this module's: a disk of Ganeti's rbd template, or a conversion halfway."""
    return any(d.dev_type == "rbd" for d in inst.disks) or (journal or Journal()).load(inst.uuid) is not None
