"""The ganeti-ceph hook: one program for every hook path it is installed in.

- instance-start/migrate/failover, pre: on the node that will run the
  instance, check it can serve each `rbd` disk in its access mode; veto with
  one line naming the disk and the fix.
- instance-failover, pre, on the master: an old primary that is offline or
  unreachable is fenced (its IP blocklisted) before the new primary opens
  the disks.
- instance-stop/remove/migrate/failover, post: no mapping of the
  instance's disks is left on the old node.
- node-add and node-modify --offline no, post, on the master: the node's
  fence (blocklist entry) is lifted, with the master's admin key.
- node-modify --drained yes|no, post, on the master: noout set on the
  node's OSDs (planned maintenance), or lifted (gnt_storage.deploy).
- disk-grow, post, on the primary: a running QEMU is told the disk's new
  size (block_resize); Ganeti 3.0 does not, and the guest would not see it.
- instance-add and disk-grow, pre, on the master: a project's quotas (the
  catalogue's projects; an instance is in project NAME by its tag
  `project:NAME`) are checked against the disks its ext instances have.

The access mode of a disk is read from its image's metadata
(`ganeti.access`, written by the provider at create and by
`gnt-storage rbd-access`): Ganeti does not give hooks disk parameters.

Every hook is bounded by `timeouts.action` (Ganeti runs hooks without a
timeout): past it, one line and a non-zero exit (a pre hook then vetoes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ganeti_ceph import atomic, config, watchdog
from ganeti_ceph.config import Config
from ganeti_ceph.errors import GanetiCephError, UsageError, run_main
from ganeti_ceph.ganeti import Ganeti
from ganeti_ceph.ganeti import run as ganeti_run
from ganeti_ceph.rbd import catalogue, mappers, placement, volumes
from ganeti_ceph.rbd.access import QEMU_CONF, qemu_keyring
from ganeti_ceph.rbd.service import VolumeService
from ganeti_ceph.session import Session
from gnt_storage import deploy
from hooks import checks, images, qmp, say
from hooks.env import HookEnv, parse, same_node, this_node
from hooks.fence import fence_if_dead, lift_fence


def check_node(h: HookEnv, cfg: Config, probe: checks.Probe) -> None:
    """Veto (raise) unless this node can serve every rbd disk of the instance."""
    chroot = None
    if h.hv.get("use_chroot") == "True":
        chroot = ganeti_run.kvm_chroot(h.instance, ganeti_run.run_dir())
    disks = ", ".join(f"disk {d.index}" for d in h.rbd_disks)
    for need in (cfg.conf, cfg.keyring):
        if not os.access(need, os.R_OK):
            raise UsageError(f"{disks} cannot be served on this node: {need} is missing or unreadable; "
                             f"restore it (the provider and QEMU need it)")
    try:
        session = Session(cfg)
        session.connect()
    except GanetiCephError as exc:
        raise UsageError(f"{disks} cannot be served on this node: {exc.message}") from None
    with session as s:
        for disk in h.rbd_disks:
            image = images.find(s, cfg, disk)
            pool, access, features = image.pool, image.access, image.features
            if access == "userspace":
                if chroot:
                    provision_chroot(cfg, chroot)
                problems = checks.userspace(cfg, probe, chroot)
            else:
                problems = checks.kernelspace(cfg, probe, mappers.get(cfg.mapper).available(), features)
                for warning in checks.krbd_beside_osds(cfg, probe):
                    say(warning)
            if problems:
                raise UsageError(f"disk {disk.index} ({pool}/{disk.volume}, {access}) cannot be served on this "
                                 f"node: {problems[0]}")
            say(f"disk {disk.index} ({pool}/{disk.volume}): {access} access OK")


def check_project(h: HookEnv, cfg: Config) -> None:
    """Veto an add or grow that would take the instance's project past its quotas."""
    cat = catalogue.load(cfg)
    name = placement.project_of(h.tags, cat.project_tag) if cat.projects else None
    project = cat.project(name) if name else None
    if project is None or h.template != "ext":
        return
    if h.hpath == "instance-add":
        add_mib, add_disks = sum(h.new_sizes), len(h.new_sizes)
    else:
        disk = next((d for d in h.disks if d.index == h.grown_disk), None)
        current = disk.size_mib if disk else 0
        add_mib, add_disks = (h.amount - current if h.absolute else h.amount), 0
    used_mib, used_disks = Ganeti().project_usage(f"{cat.project_tag}{name}", exclude=h.instance)
    if h.hpath == "disk-grow":  # the instance's own disks count too: it exists
        used_mib += sum(d.size_mib for d in h.disks)
        used_disks += len(h.disks)
    mib = volumes.MIB
    placement.refuse_project(project, placement.Usage(used_mib * mib, used_disks), add_mib * mib, add_disks)
    say(f"project {name}: {used_mib + add_mib} MiB in {used_disks + add_disks} disk(s) within its quotas")


def provision_chroot(cfg: Config, chroot: str) -> None:
    """QEMU runs chrooted (use_chroot): hot-plugged userspace disks read
    /etc/ceph inside it, so the conf and keyring are copied there."""
    etc = os.path.join(chroot, "etc", "ceph")
    os.makedirs(etc, mode=0o755, exist_ok=True)
    for src, mode in ((QEMU_CONF, 0o644), (qemu_keyring(cfg.client_id), 0o600)):
        try:
            with open(src, "rb") as fh:
                data = fh.read()
        except OSError:
            continue  # the check that follows names it
        atomic.write(os.path.join(etc, os.path.basename(src)), data, mode)


def unmap_leftovers(h: HookEnv, cfg: Config) -> None:
    """Unmap any mapping of the instance's disks still on this node, in any pool."""
    for ref in VolumeService(cfg).detach_all(d.volume for d in h.rbd_disks):
        say(f"unmapped leftover {ref.pool}/{ref.name}")


def resize_in_qemu(h: HookEnv, cfg: Config) -> None:
    """After grow-disk, tell a running QEMU the disk's new size (Ganeti 3.0 does not)."""
    run_dir = ganeti_run.run_dir()
    sock = ganeti_run.kvm_qmp_socket(h.instance, run_dir)
    disk = next((d for d in h.rbd_disks if d.index == h.grown_disk), None)
    if disk is None or not os.path.exists(sock):
        return
    with Session(cfg) as s:
        image = images.find(s, cfg, disk)
    pool, size = image.pool, image.size
    try:
        client = qmp.Qmp(sock)
        try:
            device = qmp.drive_of(client.call("query-block"), disk.volume, h.instance, disk.index, run_dir)
            if device is None:
                raise qmp.QmpError(f"no drive of {disk.volume}")
            client.call("block_resize", device=device, size=size)
        finally:
            client.close()
    except (OSError, ValueError, qmp.QmpError) as exc:
        raise UsageError(f"disk {disk.index} grew in Ceph, but QEMU was not told ({exc}); "
                         f"the guest sees the new size after a restart") from None
    say(f"QEMU now sees disk {disk.index} ({pool}/{disk.volume}) at {size // 2**20} MiB")


def storage_node_hook(h: HookEnv, bound: float) -> None:
    """The storage group's node lifecycle (gnt_storage.deploy), on the master only."""
    if not deploy.storage_group_kept():  # no storage cluster kept on this master: nothing to do
        return
    name = h.target or h.node_name
    if h.hpath == "node-modify" and h.offline == "True" and h.phase == "pre":
        # Data that is still moving is a clean veto before the watchdog ends the hook.
        deploy.node_offline(name, drain_timeout=max(1.0, bound - 60))
    elif h.hpath == "node-modify" and h.offline == "True" and h.phase == "post":
        deploy.node_stopped(name)  # only now: a later pre hook or the opcode may still have refused
    elif back_in_service(h):
        deploy.node_online(name)
    elif h.hpath == "node-modify" and h.phase == "post" and h.drained in ("True", "False"):
        deploy.node_maintenance(name, on=h.drained == "True")
    elif h.hpath == "node-remove" and h.phase == "pre":
        deploy.refuse_node_remove(name)
    elif h.hpath == "node-remove" and h.phase == "post":
        deploy.forget_node(name)


def back_in_service(h: HookEnv) -> bool:
    """node-add (readd) or `gnt-node modify --offline no`, post: the node serves again."""
    return h.phase == "post" and (h.hpath == "node-add" or (h.hpath == "node-modify" and h.offline == "False"))


def run(h: HookEnv, me: str, load: Callable[[], Config] = config.load, probe: checks.Probe | None = None,
        bound: float = config.Timeouts().action) -> int:
    """Do this node's part of the hook `h`; `me` is this node's exact Ganeti name."""
    probe = probe or checks.Probe()
    is_master = same_node(h.master, me)
    if h.hpath in ("node-add", "node-modify", "node-remove"):
        if back_in_service(h) and is_master and os.path.exists(config.config_path()):
            lift_fence(h.target or h.node_name, load(), h.node_ip)
        if is_master:
            storage_node_hook(h, bound)
        return 0
    if (is_master and h.phase == "pre" and h.hpath in ("instance-add", "disk-grow") and h.template == "ext"
            and os.path.exists(config.config_path())):
        check_project(h, load())
    if not h.rbd_disks:
        return 0
    if h.hpath == "disk-grow":
        if h.phase == "post" and same_node(h.primary, me) and h.hypervisor == "kvm":
            resize_in_qemu(h, load())
        return 0
    kind = h.hpath.removeprefix("instance-")
    serving = h.new_primary if kind in ("migrate", "failover") else h.primary
    if h.phase == "pre":
        if kind == "failover" and is_master:
            fence_if_dead(h, load())
        if kind in ("start", "migrate", "failover") and same_node(serving, me):
            check_node(h, load(), probe)
    elif kind in ("stop", "remove", "migrate", "failover"):
        old = h.old_primary if kind in ("migrate", "failover") else h.primary
        if same_node(old, me):
            unmap_leftovers(h, load())
    return 0


def entry() -> None:
    where = os.path.basename(os.path.dirname(os.path.abspath(sys.argv[0])))  # e.g. instance-start-pre.d
    prog, bound = f"ganeti-ceph hook {where}", config.action_timeout(dict(os.environ))
    watchdog.start(bound, prog)
    run_main(prog, lambda: run(parse(os.environ), this_node(), bound=bound))
