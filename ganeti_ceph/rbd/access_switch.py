"""`gnt-storage rbd-access INSTANCE MODE`: move an instance's rbd disks between kernelspace and userspace.

Ganeti refuses to change a disk's `access`. Per disk, in index order: add a
disk at its index whose create adopts (renames) the old image, then remove the
old disk, now one further; its attach fails (no image under that name), so
Ganeti drops only the config entry. No data is copied. Stopped instances only:
QEMU would have to reopen the disk. Refused while Ganeti's prealloc_wipe_disks
is on: Ganeti would zero the adopted image right after the add. An adopt
interrupted after its rename is resumed by the next run (ganeti_ceph.rbd.volumes.adopt
finds the image through the pool's adoption index and its record). Whether an
add adopted is the new image's own record's word, never the old name's absence;
a new disk is only taken out again when its image is provably new and empty.
See doc/access-switch.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ganeti_ceph import config, runner
from ganeti_ceph.config import Config
from ganeti_ceph.errors import GanetiCephError, GanetiFailed, NotFound, UsageError
from ganeti_ceph.ganeti import condense, config_data, parse_list, run_command, ssconf
from ganeti_ceph.ganeti.config_data import Disk
from ganeti_ceph.log import progress
from ganeti_ceph.naming import ACCESS_MODES, ADOPT_PARAM, META_ADOPT
from ganeti_ceph.rbd import prealloc_wipe
from ganeti_ceph.rbd.catalogue import Catalogue
from ganeti_ceph.session import Session

COMMAND = "rbd-access"
PROVIDER = config_data.RBD_PROVIDER
NOT_CARRIED = {"provider", "access", "origin", "adopt", ADOPT_PARAM}
ADOPT_RECORD = META_ADOPT  # what the adopted image says it came from
GANETI_LIB = ssconf.LIB_DIR
SEP = "\x1f"
LIST_FIELDS = ("name", "uuid", "status", "oper_state", "admin_state", "hypervisor", "disk.uuids")
QUERY_TIMEOUT = 120.0
MODIFY_TIMEOUT = 900.0
STATE_DIR = "/var/lib/ganeti-ceph/rbd-convert"  # on the master: rbd-convert's journals
LOCK_DIR = "/run/ganeti-ceph/instance-lock"  # on the master: one lock per instance, rbd-access's and rbd-convert's
LOCK_WAIT = 2.0

Runner = Callable[[list[str], float], subprocess.CompletedProcess]


class Refused(GanetiCephError):
    """The switch cannot start; nothing was changed."""


@dataclass(frozen=True)
class Instance:
    name: str
    uuid: str
    status: str
    running: bool | None  # None: Ganeti cannot tell (node down)
    admin_state: str
    hypervisor: str
    disks: tuple[Disk, ...]


def parse_instance(line: str, cfg: dict) -> Instance:
    """One `gnt-instance list --separator=SEP -o LIST_FIELDS` line, with the disks from config.data."""
    values = line.rstrip("\n").split(SEP)
    if len(values) != len(LIST_FIELDS):
        raise GanetiFailed(f"unexpected gnt-instance list output: {line.strip()!r}")
    name, uuid, status, oper, admin, hypervisor, uuids = values
    try:
        disk_uuids = parse_list(uuids)
    except (ValueError, SyntaxError):
        raise GanetiFailed(f"unexpected disk list from gnt-instance list: {uuids!r}") from None
    return Instance(name, uuid, status, {"Y": True, "N": False}.get(oper), admin, hypervisor,
                    config_data.instance_disks(cfg, uuid, disk_uuids))


def esc(value: str) -> str:
    """Ganeti splits --disk values at commas; a backslash keeps one."""
    return re.sub(r"([\\,])", r"\\\1", value)


@dataclass(frozen=True)
class Move:
    """One disk to move without copying: a new disk of provider rbd, added at its index, adopts `pool`/`image`
    (the image holding its data now), then its entry goes. `params` are the new disk's other provider
    parameters; `again` is the command whose rerun resumes (rbd-access and rbd-convert share this)."""

    disk: Disk
    pool: str
    image: str
    access: str
    params: dict[str, str]
    again: str


def access_move(disk: Disk, target: str, pool: str, instance: str = "") -> Move:
    """The access switch's move: same image, same parameters but the access."""
    params = {k: v for k, v in disk.params.items() if k not in NOT_CARRIED}
    return Move(disk, pool, disk.volume, target, params, f"gnt-storage {COMMAND} {instance} {target}")


def move_spec(m: Move, at: str = "") -> str:
    """--disk value that inserts the replacement at the disk's index (or `at`: `N:add,` elsewhere, `N:` in a
    gnt-instance add), adopting its image."""
    parts = [f"size={m.disk.size_mib}M", f"provider={PROVIDER}", f"access={m.access}", f"{ADOPT_PARAM}={m.image}"]
    if m.disk.mode != "rw":
        parts.append(f"mode={m.disk.mode}")
    parts += [f"{k}={esc(v)}" for k, v in sorted(m.params.items())]
    return (at or f"{m.disk.index}:add,") + ",".join(parts)


def add_spec(disk: Disk, target: str) -> str:
    return move_spec(access_move(disk, target, ""))


def modify(instance: str, spec: str, *flags: str) -> list[str]:
    return ["gnt-instance", "modify", *flags, "--disk", spec, instance]


def move_commands(instance: str, m: Move, new: str = "") -> list[list[str]]:
    """The gnt-instance calls that move one disk: the add at its index, then the old entry's remove and the new
    disk's naming by UUID (`new`, known once the add made it; a dry run shows its index), so a disk list that
    changed meanwhile never turns them on another disk (Ganeti's remove would delete that disk's image)."""
    disk = m.disk
    cmds = [modify(instance, move_spec(m)), modify(instance, f"{disk.uuid}:remove")]
    if disk.name:
        cmds.append(modify(instance, f"{new or disk.index}:modify,name={esc(disk.name)}"))
    return cmds


def commands(instance: str, disk: Disk, target: str) -> list[list[str]]:
    return move_commands(instance, access_move(disk, target, "", instance))


class Ganeti:
    """The master's view of an instance, and the gnt-instance calls that change it. No gnt-* command
    shows disk parameters (access, pool...): they come from config.data, by the UUIDs the list gives."""

    def __init__(self, runner: Runner = run_command, lib_dir: str = GANETI_LIB, state_dir: str = STATE_DIR,
                 lock_dir: str = LOCK_DIR) -> None:
        self.runner = runner
        self.lib_dir = lib_dir
        self.state_dir = state_dir
        self.lock_dir = lock_dir

    def check_master(self) -> None:
        """config.data is only authoritative on the master (elsewhere it may lag)."""
        master = ssconf.value("master_node", self.lib_dir)
        if master is None:
            raise Refused("this node is not in a Ganeti cluster: run this on the Ganeti master")
        me = socket.gethostname()
        if master not in (me, socket.getfqdn()) and master.split(".")[0] != me.split(".")[0]:
            raise Refused(f"run this on the Ganeti master, {master} (this is {me})")

    def instance(self, name: str) -> Instance:
        res = self.runner(["gnt-instance", "list", "--no-headers", f"--separator={SEP}", "-o",
                           ",".join(LIST_FIELDS), name], QUERY_TIMEOUT)
        if res.returncode != 0:
            text = condense(res)
            if "not found" in text or "not known" in text:
                raise Refused(f"instance {name} does not exist")
            raise GanetiFailed(f"gnt-instance list {name} failed: {text}")
        return parse_instance(res.stdout.splitlines()[0] if res.stdout.strip() else "", self.config())

    def config(self) -> dict:
        """The master's config.data."""
        cfg = config_data.load(self.lib_dir)
        if cfg is None:
            raise GanetiFailed("cannot read Ganeti's config.data: this node has none (run this on the master)")
        return cfg

    def wipes_new_disks(self) -> bool | None:
        """Ganeti's prealloc_wipe_disks, from the master's config.data (None: unreadable)."""
        return prealloc_wipe.wipes_new_disks(self.lib_dir)

    def run(self, argv: list[str]) -> None:
        self.output(argv)

    def output(self, argv: list[str]) -> str:
        """Run a Ganeti command; its stdout."""
        res = self.runner(argv, MODIFY_TIMEOUT)
        if res.returncode != 0:
            raise GanetiFailed(f"{shlex.join(argv)} failed: {condense(res)}")
        return res.stdout


class CephImages:
    """Read-only look-ups in the cluster the provider uses (this node's ganeti-ceph config, or `cfg`).
    Nothing is read or connected until a look-up needs it: the refusals before need neither."""

    def __init__(self, cfg: Config | None = None) -> None:
        self._cfg = cfg
        self._session: Session | None = None

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            self._cfg = config.load(config.config_path())
        return self._cfg

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.cfg)
            self._session.connect()
        return self._session

    def pool_of(self, disk: Disk) -> str:
        """The pool our provider finds `disk`'s volume in: its `pool` parameter, else the default."""
        return self.pool(disk.params.get("pool", ""))

    def pool(self, named: str | None) -> str:
        """The pool a disk whose `pool` parameter is `named` (None or empty: none) lives in."""
        return Catalogue.of(self.cfg).pool(named or "")

    def exists(self, pool: str, image: str) -> bool:
        from ganeti_ceph.rbd import volumes

        return volumes.exists(self.session, pool, image)

    def _record(self, pool: str, image: str, lookup: Callable) -> object:
        with self.session.ioctx(pool) as ioctx:
            return lookup(self.session, ioctx, image)

    def metadata(self, pool: str, image: str, key: str) -> str | None:
        """One metadata value of an image (None: not set)."""
        def lookup(session: Session, ioctx: object, name: str) -> str | None:
            import rbd

            with session.errors(f"read {pool}/{name}'s metadata"), rbd.Image(ioctx, name, read_only=True) as img:
                return dict(img.metadata_list()).get(key)

        return self._record(pool, image, lookup)  # type: ignore[return-value]

    def interrupted(self, pool: str, image: str) -> str | None:
        """Where an adopt of `image` that stopped after its rename left it (None: nowhere)."""
        from ganeti_ceph.rbd import volumes

        return self._record(pool, image, volumes.interrupted_adoption)  # type: ignore[return-value]

    def adopted_from(self, pool: str, image: str) -> str | None:
        """The image `image` was completely adopted from (None: not an adoption, or not finished)."""
        from ganeti_ceph.rbd import volumes

        try:
            rec = self._record(pool, image, volumes.adopt_record) or {}
        except NotFound:
            return None
        return str(rec["from"]) if rec.get("done") is True and rec.get("from") else None  # type: ignore[union-attr]

    def unproven_empty(self, pool: str, image: str) -> str | None:
        """Why `image` is not provably a new image nobody adopted, used or wrote (None: removing it loses nothing)."""
        from ganeti_ceph.rbd import volumes

        return self._record(pool, image, volumes.unproven_empty)  # type: ignore[return-value]

    def watchers(self, pool: str, image: str) -> list[str]:
        """Who watches `image` (a mapping, a VM): an adopt of it would be refused."""
        from ganeti_ceph.rbd import volumes

        def lookup(session: Session, ioctx: object, name: str) -> list[str]:
            import rbd

            with session.errors(f"open image {pool}/{name}"), rbd.Image(ioctx, name, read_only=True) as img:
                return volumes.watchers(session, img)

        return self._record(pool, image, lookup)  # type: ignore[return-value]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


class DiskFailed(Exception):
    """One disk's switch stopped; `finish` says what completes it (empty: nothing changed for it)."""

    def __init__(self, cause: str, finish: str = "", rerun: bool = True) -> None:
        super().__init__(cause)
        self.cause, self.finish, self.rerun = cause, finish, rerun


def _why(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GanetiCephError) else "interrupted (a Ganeti job may still run: gnt-job list)"


def check_stopped(inst: Instance) -> None:
    name = inst.name
    if inst.running:
        raise Refused(f"instance {name} is running: stop it first (gnt-instance shutdown {name}), switch, then "
                      "start it; live switching is not possible, QEMU would have to reopen the disk")
    if inst.running is None:
        raise Refused(f"cannot tell whether instance {name} runs (status {inst.status}); bring its node back first")
    if inst.admin_state == "up":
        raise Refused(f"instance {name} is meant to run (status {inst.status}) and Ganeti's watcher may start it: "
                      f"gnt-instance shutdown {name} first")


def move_disk(ganeti: Ganeti, images: CephImages, instance: str, m: Move) -> None:
    """Add, check the adoption, remove the old entry, restore the name (module docstring)."""
    disk, pool, old = m.disk, m.pool, m.image
    add, remove, *rename = move_commands(instance, m)
    own = (images.pool_of(disk), disk.volume)  # what our provider's remove of the old entry would reach
    where = f"disk/{disk.index} ({pool}/{old}, {disk.size_mib} MiB)"

    def attempt(argv: list[str], finish: list[list[str]]) -> None:
        try:
            ganeti.run(argv)
        except (GanetiCephError, KeyboardInterrupt) as exc:
            raise DiskFailed(_why(exc), "; ".join(shlex.join(a) for a in finish)) from exc

    progress(f"{where}: {disk.access} -> {m.access}: adding the new disk at index {disk.index}, adopting the image")
    try:
        ganeti.run(add)
    except (GanetiCephError, KeyboardInterrupt) as exc:
        raise add_failed(images, m, _why(exc)) from exc
    # Until the new disk's UUID is read back, the hint names where to find it: an index may name another disk.
    undo = modify(instance, f"<UUID of disk/{disk.index} in gnt-instance info {instance}>:remove")
    try:
        disks = ganeti.instance(instance).disks
        moved = len(disks) > disk.index + 1 and disks[disk.index + 1].uuid == disk.uuid
        new = disks[disk.index].volume if moved else ""
        if moved:
            undo = modify(instance, f"{disks[disk.index].uuid}:remove")
            rename = move_commands(instance, m, disks[disk.index].uuid)[2:]
        adopted = moved and images.adopted_from(pool, new) == old  # the new image's own word
        kept = moved and (images.exists(pool, old) or (own != (pool, old) and images.exists(*own)))
        unproven = images.unproven_empty(pool, new) if moved and not adopted else None
    except (GanetiCephError, KeyboardInterrupt) as exc:
        raise DiskFailed(_why(exc), f"if disk/{disk.index}'s image says it was adopted from {pool}/{old} "
                         f"(rbd image-meta get {pool}/<its volume> {ADOPT_RECORD}) and {pool}/{old} is gone: "
                         + "; ".join(shlex.join(a) for a in [remove, *rename])
                         + f"; if it has no such record and holds nothing: {shlex.join(undo)} (the new disk)") from exc
    if not moved:
        raise DiskFailed(f"after the add, disk/{disk.index + 1} is not the old disk (changed meanwhile?)",
                         f"check gnt-instance info {instance}")
    if not adopted:
        not_adopted(ganeti, images, instance, m, new, kept, unproven, undo)
    if kept:  # adopted, yet the old name still opens: its remove would reach what that name opens
        name = f"{pool}/{old}" if images.exists(pool, old) else "/".join(own)
        raise DiskFailed(f"disk/{disk.index} ({pool}/{new}) holds the data, adopted from {pool}/{old}, but "
                         f"the name {name} still opens an image (a rename cut short, or a new image "
                         f"made under that name); not removing disk/{disk.index + 1}, whose remove would go to it: "
                         f"compare rbd info {name} and {pool}/{new} and clear the stale name first",
                         "; ".join(shlex.join(a) for a in [remove, *rename]), rerun=True)
    progress(f"{where}: removing the old entry {disk.uuid}, now disk/{disk.index + 1} (the image is {new})")
    attempt(remove, [remove, *rename])
    if rename:
        progress(f"{where}: giving the new disk the name {disk.name}")
        attempt(rename[0], rename)


def not_adopted(ganeti: Ganeti, images: CephImages, instance: str, m: Move, new: str, kept: bool,
                unproven: str | None, undo: list[str]) -> None:
    """The add made disk/N, but its image records no adoption of the old one: take disk/N out again only when
    its image is provably new and empty (then Ganeti dropped the parameter and nothing is lost), and only while
    the old image is still there; else stop with both disks as they are."""
    disk, pool = m.disk, m.pool
    where = f"disk/{disk.index} ({pool}/{new})"
    if not kept or unproven:
        state = f"image {pool}/{m.image} is gone" if not kept else f"{where} {unproven}"
        raise DiskFailed(f"the add's {where} records no adoption of {pool}/{m.image} and {state}: removing "
                         f"nothing; find where the data is (rbd ls {pool}, rbd image-meta list) before changing "
                         "either disk", f"check gnt-instance info {instance}", rerun=False)
    progress(f"{where}: image {pool}/{m.image} was not adopted; removing the new, empty disk again")
    why = f"Ganeti did not hand {ADOPT_PARAM}= to the provider, which created a new, empty image instead"
    try:
        ganeti.run(undo)
        left = images.exists(pool, new)
    except (GanetiCephError, KeyboardInterrupt) as exc:
        raise DiskFailed(f"{why}; removing that disk/{disk.index} failed too: {_why(exc)}", shlex.join(undo)) from exc
    # Ganeti drops a removed disk's entry even when the provider's remove fails: say what that left behind.
    gone = f"its empty image {pool}/{new} is left, attached to nothing: rbd rm it" if left else "removed again"
    raise DiskFailed(f"{why} ({gone}); the rbd provider on the nodes must take {ADOPT_PARAM}=", rerun=False)


def add_failed(images: CephImages, m: Move, cause: str) -> DiskFailed:
    """What a failed add left: the image untouched, or renamed by an adopt that stopped (a new run completes
    it: the provider finds the image by its record), or gone (the add may have gone through after all)."""
    pool, old, rerun = m.pool, m.image, m.again
    try:
        if images.exists(pool, old):
            return DiskFailed(cause)
        moved = images.interrupted(pool, old)
    except GanetiCephError as exc:
        return DiskFailed(f"{cause}; looking for image {pool}/{old} failed too: {exc.message}; once Ceph "
                          "answers, a new run resumes or says what is left", rerun, rerun=False)
    if moved:
        return DiskFailed(f"{cause}; the adoption stopped halfway: image {pool}/{old} is now {pool}/{moved}, "
                          "which a new run completes", rerun, rerun=False)
    return DiskFailed(f"{cause}; image {pool}/{old} is no longer there (a Ganeti job may still run: wait "
                      "for it, gnt-job list); a new run resumes or says what is left", rerun, rerun=False)


def missing_image(images: CephImages, inst: Instance, d: Disk, pool: str, resumes: bool) -> str | None:
    """Why disk `d`, whose image is missing, stops the switch (None: the switch's add resumes its adoption)."""
    moved = images.interrupted(pool, d.volume)
    where = f"disk/{d.index} of {inst.name}: image {pool}/{d.volume} does not exist"
    if moved:
        return None if resumes else (f"{where}: an interrupted adoption left it as {pool}/{moved}; to undo that: "
                                     f"rbd rename {pool}/{moved} {pool}/{d.volume}")
    before = inst.disks[d.index - 1] if d.index else None
    if before and before.is_rbd and images.adopted_from(images.pool_of(before), before.volume) == d.volume:
        return (f"{where}: disk/{before.index} adopted it (an interrupted switch left this entry): drop the entry "
                f"with gnt-instance modify --disk {d.uuid}:remove {inst.name}")
    return (f"{where} and no adoption of it was found; find its data first (rbd ls {pool}, rbd trash ls {pool}) "
            "and change nothing until then")


def switch(name: str, target: str, dry_run: bool = False, ganeti: Ganeti | None = None,
           images: CephImages | None = None) -> int:
    """Switch every rbd disk of `name` not yet in `target` mode; see the module docstring."""
    if target not in ACCESS_MODES:
        raise UsageError(f"access mode {target!r} is not valid; use kernelspace or userspace")
    ganeti = ganeti or Ganeti()
    ganeti.check_master()
    with locked(ganeti, name) as inst:
        return _switch(ganeti, inst, target, dry_run, images)


def _switch(ganeti: Ganeti, inst: Instance, target: str, dry_run: bool, images: CephImages | None) -> int:
    check_stopped(inst)
    rbd = [d for d in inst.disks if d.is_rbd]
    if not rbd:
        raise Refused(f"instance {inst.name} has no disks of the {PROVIDER} ExtStorage provider")
    todo = [d for d in rbd if d.access != target]
    if not todo:
        print(f"{inst.name}: all {len(rbd)} rbd disk(s) already use {target}; nothing to do")
        return 0
    if target == "userspace" and inst.hypervisor != "kvm":
        raise Refused(f"userspace access needs the kvm hypervisor; instance {inst.name} uses {inst.hypervisor}")
    check_wipe(ganeti)
    images = images or CephImages()
    try:
        for d in rbd:  # also those already in `target`: a start would fail on a disk without image
            pool = images.pool_of(d)
            if not images.exists(pool, d.volume):
                why = missing_image(images, inst, d, pool, resumes=d in todo)
                if why:
                    raise Refused(why)
                progress(f"disk/{d.index}: image {pool}/{d.volume} was left halfway by an interrupted adoption; "
                         "its add resumes it")
        moves = [access_move(d, target, images.pool_of(d), inst.name) for d in todo]
        done = execute(ganeti, images, inst.name, moves, f"switched to {target}", dry_run)
    finally:
        images.close()
    if done is not None:
        print(f"{inst.name}: {', '.join(f'disk/{d.index}' for d in done)} switched to {target}")
    return 0


def instance_lock(directory: str, inst: Instance) -> contextlib.AbstractContextManager[None]:
    """One rbd-access or rbd-convert per instance at a time: each removes and renames disks the other may have
    just moved. A flock on <directory>/<instance UUID>.lock, the holder's pid inside."""
    def busy(pid: str) -> Refused:
        return Refused(f"another rbd-convert/rbd-access of {inst.name} is running (pid {pid or 'unknown'}); "
                       "wait for it")

    return runner.held(os.path.join(directory, f"{inst.uuid}.lock"), LOCK_WAIT, str(os.getpid()), busy, GanetiFailed)


@contextlib.contextmanager
def locked(ganeti: Ganeti, name: str) -> Iterator[Instance]:
    """The instance, read again once this run holds its lock: a run that held it may have changed it."""
    with instance_lock(ganeti.lock_dir, ganeti.instance(name)):
        yield ganeti.instance(name)


def check_wipe(ganeti: Ganeti) -> None:
    wipe = ganeti.wipes_new_disks()
    if wipe is not False:
        raise Refused("Ganeti's prealloc_wipe_disks is on and would zero each adopted image right after its add; "
                      f"turn it off ({prealloc_wipe.OFF}), run this, then turn it on again" if wipe else
                      "cannot read prealloc_wipe_disks from Ganeti's config.data (it would zero the adopted images)")


def execute(ganeti: Ganeti, images: CephImages, instance: str, moves: list[Move], what: str,
            dry_run: bool) -> list[Disk] | None:
    """Run the moves in index order (None: dry run, the commands printed); stop at the first failure, saying
    what was `what` (e.g. "switched to userspace") and what finishes the job."""
    # A stopped instance may still have its disks mapped (after gnt-instance add --no-start or
    # activate-disks); the mapping would be a watcher, and the provider refuses to adopt a watched image.
    deactivate = ["gnt-instance", "deactivate-disks", instance]
    if dry_run:
        print("\n".join(map(shlex.join, [deactivate, *(argv for m in moves for argv in move_commands(instance, m))])))
        return None
    progress(f"deactivating the disks of {instance}, in case they are still mapped")
    ganeti.run(deactivate)
    done: list[Disk] = []
    for m in moves:
        try:
            move_disk(ganeti, images, instance, m)
        except DiskFailed as exc:
            raise GanetiFailed(failure_message(instance, what, done, m, exc)) from exc
        done.append(m.disk)
        progress(f"disk/{m.disk.index}: {what}")
    return done


def failure_message(instance: str, what: str, done: list[Disk], failed: Move, exc: DiskFailed) -> str:
    """Exactly what was done, what broke, and the commands that finish the job."""
    switched = ", ".join(f"disk/{d.index}" for d in done) or "none"
    text = f"{instance}: {what}: {switched}; disk/{failed.disk.index} failed: {exc.cause}; "
    text += f"to finish it run: {exc.finish}" if exc.finish else "nothing changed for it"
    return text + (f"; then run: {failed.again}" if exc.rerun else "")
