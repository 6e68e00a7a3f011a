"""OSDs on block devices through `ceph-volume raw` (Debian's ceph-osd package ships it).

Raw mode, not lvm: lvm (and dmcrypt) need device-mapper, which not every
node has; ceph-volume raw needs nothing but the device. Its OSD directory is
kept on disk (`--no-tmpfs`), so a reboot only undoes the device's owner.

Across reboots we rely on ceph-volume's own activation, run by us: in
Ceph 16 `ceph-volume raw` has no boot unit (its activate refuses to run
without --no-systemd) and the ceph-osd package's udev rules own only LVM
volumes. So before every start of osd.N, `ceph-volume raw activate
--no-systemd --no-tmpfs` re-primes /var/lib/ceph/osd/ceph-N from the
device's label, re-links `block` to the device's kernel name (resolved from
the stable by-id name at that start) and gives the device to user ceph:
with systemd from a drop-in of ceph-osd@N.service (ExecStartPre, run as
root), without it from the node's `start`.

ceph-volume registers the OSD itself (`ceph osd new` as client.bootstrap-osd,
with the id we give); its OSD uuid is its own, read back from the label.

Keys: ceph-volume writes the new OSD's keyring with `ceph-authtool
--add-key <key>` (the key in that child's argv for its few milliseconds;
Ceph 16 has no other way) and logs that command line. So its log goes to a
private directory and reaches /var/log/ceph/ceph-volume.log with every key
redacted (runner.redact, which also cleans a failed tool's last words).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from ganeti_ceph import runner
from ganeti_ceph.errors import GanetiCephError
from ganeti_ceph.log import warn
from gnt_storage.deploy import devices
from gnt_storage.deploy.devices import TOOL_ENV

BOOTSTRAP = "client.bootstrap-osd"
BOOTSTRAP_KEYRING = "/var/lib/ceph/bootstrap-osd/ceph.keyring"
BOOTSTRAP_CAPS = {"mon": "allow profile bootstrap-osd"}
CEPH_VOLUME = "/usr/sbin/ceph-volume"
DROPIN = "/etc/systemd/system/ceph-osd@{}.service.d/ganeti-ceph-volume.conf"
TIMEOUT = 600.0  # mkfs of a large device with its DB
LOG = "/var/log/ceph/ceph-volume.log"
UNIT_SAFE = re.compile(r"^/[A-Za-z0-9._/:+@=,-]+$")  # needs no quoting for sh or systemd, no % specifier


def _extra(osd: dict[str, Any], name: Callable[[str], str] = str) -> list[str]:
    return [a for key in ("db", "wal") if osd.get(key) for a in (f"--block.{key}", name(osd[key]))]


def prepare_argv(osd: dict[str, Any]) -> list[str]:
    """`ceph-volume raw prepare` of `osd` on its stable device name, with its DB/WAL devices (pure)."""
    return [CEPH_VOLUME, "raw", "prepare", "--bluestore", "--no-tmpfs", "--data", osd["dev"],
            "--osd-id", str(osd["id"]), *_extra(osd)]


def activate_argv(osd: dict[str, Any], name: Callable[[str], str] = os.path.realpath) -> list[str]:
    """`ceph-volume raw activate` of `osd`: safe to repeat, it only re-primes the directory.

    Its devices by their kernel names, resolved now from the stable ones: in Ceph 16 activate looks a
    device up in lsblk's list by the exact name (a by-id link fails with an IndexError), and links
    `block` to that name; resolved anew at every start, a renumbered sdX is followed.
    """
    return [CEPH_VOLUME, "raw", "activate", "--device", name(osd["dev"]), "--osd-id", str(osd["id"]),
            "--no-systemd", "--no-tmpfs", *_extra(osd, name)]


def dropin(osd: dict[str, Any]) -> str:
    """The ceph-osd@N.service drop-in that activates the OSD before every start; the shell resolves the
    stable names when the unit starts ("$$": a "$" that systemd leaves to the shell)."""
    odd = [p for p in (osd["dev"], osd.get("db"), osd.get("wal")) if p and not UNIT_SAFE.match(p)]
    if odd:
        raise GanetiCephError(f"cannot name {odd[0]} in a systemd unit (quotes, spaces or escapes): give the "
                              "device by another of its /dev/disk names")
    argv = activate_argv(osd, lambda p: f'"$(readlink -f "{p}")"')
    line = f"/bin/sh -c 'exec {' '.join(argv)}'".replace("$", "$$")
    return f"# written by gnt-storage: ceph-volume raw has no boot unit of its own\n[Service]\nExecStartPre=+{line}\n"


def data_device(osd: dict[str, Any]) -> str:
    """The OSD's data device: the stable name recorded at prepare (a renumbered sdX follows it), else the
    name given at init (pure)."""
    return osd.get("stable", {}).get("dev") or osd["dev"]


def is_volume(osd: dict[str, Any]) -> bool:
    """A block device is made with ceph-volume; a file (test beds, local-cluster) with ceph-osd --mkfs.
    What the state recorded wins over a probe."""
    if "volume" in osd:  # recorded once the node made it: never re-probed (a missing link is no file OSD)
        return bool(osd["volume"])
    return devices.is_block(data_device(osd))


def with_stable_names(osd: dict[str, Any]) -> dict[str, Any]:
    """`osd` with dev, db and wal by their stable names (those recorded at prepare first); raises
    naming the first that has none."""
    out = {**osd, **osd.get("stable", {})}
    for key in ("dev", "db", "wal"):
        if out.get(key):
            name = devices.stable_name(out[key])
            if name is None:
                raise GanetiCephError(f"{out[key]} has no stable name under {devices.DISK_DIR}/by-id (by-path, "
                                      "by-partuuid): name the device by one, a reboot may renumber it")
            out[key] = name
    out["stable"] = {k: out[k] for k in ("dev", "db", "wal") if out.get(k)}
    return out


def state(osd: dict[str, Any]) -> str:
    """"empty", "ours" (a store of this cluster's osd.N, with its DB/WAL) or why the devices cannot be used;
    never writes. A DB or WAL device's label names only its OSD's uuid: it must match the data device's."""
    try:
        head = devices.read_head(osd["dev"])
    except OSError as exc:
        return f"not usable: {(exc.strerror or str(exc)).lower()}"
    parts = [(key, osd[key]) for key in ("db", "wal") if osd.get(key)]
    if devices.label_uuid(head) is None:
        for key, dev in [("data", osd["dev"]), *parts]:
            least = devices.MIN_DEVICE_BYTES if key == "data" else devices.MIN_DB_WAL_BYTES
            found = devices.device_state(dev, "", least)
            if found != "empty":
                return found if key == "data" else f"not usable: its {key} device {dev} is {found}"
        return "empty"
    label = devices.read_label(osd["dev"])
    if "whoami" not in label:
        return f"not usable: holds the {label.get('description')} of OSD {label.get('osd_uuid')}; {devices.WIPE_HINT}"
    if (label["whoami"], label.get("ceph_fsid")) != (str(osd["id"]), osd["fsid"]):
        return (f"not usable: holds osd.{label['whoami']} of cluster {label.get('ceph_fsid')}; "
                f"{devices.WIPE_HINT}")
    for key, dev in parts:
        try:
            found = devices.label_uuid(devices.read_head(dev))
        except OSError as exc:
            return f"not usable: its {key} device {dev}: {(exc.strerror or str(exc)).lower()}"
        if found == label.get("osd_uuid"):
            continue
        # a prepare stopped before it labelled the DB/WAL, or a redo after it zeroed them: proven empty
        if found is None and label.get("mkfs_done") != "yes" and devices.device_state(
                dev, "", devices.MIN_DB_WAL_BYTES) == "empty":
            continue
        return f"not usable: its {key} device {dev} is not this OSD's {key} (it holds {found or 'no label'})"
    return "ours"


def _ceph_volume(argv: list[str], what: str, timeout: float, log: str = LOG) -> None:
    """Run ceph-volume with its log in a private directory, then append that log to `log`, redacted."""
    private = tempfile.mkdtemp(prefix="ganeti-ceph-volume-")  # 0700
    try:
        runner.run([argv[0], "--log-path", private, *argv[1:]], what, timeout, env=TOOL_ENV)
    finally:
        try:
            with open(os.path.join(private, "ceph-volume.log"), errors="replace") as fh:
                text = runner.redact(fh.read())
            os.makedirs(os.path.dirname(log), exist_ok=True)
            with open(log, "a") as out:
                out.write(text)
        except OSError as exc:
            warn(f"ceph-volume's log of {what} was not kept in {log}: {exc.strerror}")
        shutil.rmtree(private, ignore_errors=True)


def prepare(osd: dict[str, Any]) -> str:
    """Make the OSD with ceph-volume (it registers osd.N); return the uuid it chose."""
    _ceph_volume(prepare_argv(osd), f"ceph-volume raw prepare of osd.{osd['id']} on {osd['dev']}", TIMEOUT)
    return devices.read_label(osd["dev"]).get("osd_uuid", "")


def purge_new(osd_id: str) -> None:
    """Take back osd.N's registration; the mon itself refuses for an OSD that ever booted."""
    runner.run(["ceph", "--name", "client.bootstrap-osd", "--keyring", BOOTSTRAP_KEYRING, "--connect-timeout",
                "30", "osd", "purge-new", f"osd.{osd_id}", "--yes-i-really-mean-it"],
               f"unregister osd.{osd_id} that never booted", 60, env=TOOL_ENV)


def forget_unfinished(osd: dict[str, Any]) -> None:
    """Undo a `prepare` that never finished (the osdmap says osd.N never booted), resumably.

    Its registration goes first: the mon refuses purge-new for an OSD that ever booted, so that is also
    the proof before anything is destroyed, and a run stopped after it finds the OSD gone (purge-new of
    an OSD that does not exist succeeds). Then the DB and WAL labels, the data label last: a run
    stopped in between finds the data label unfinished and its DB/WAL unlabelled, which state() accepts.
    """
    uuid = devices.label_uuid(devices.read_head(osd["dev"])) or ""
    purge_new(osd["id"])
    for key in ("db", "wal", "dev"):
        if osd.get(key) and devices.label_uuid(devices.read_head(osd[key])) == uuid:
            devices.zero_head(osd[key], uuid)


def activate(osd: dict[str, Any]) -> None:
    """What a boot needs before ceph-osd starts: directory, block links, device owner."""
    _ceph_volume(activate_argv(osd), f"ceph-volume raw activate of osd.{osd['id']}", 120)


def write_dropin(osd: dict[str, Any]) -> bool:
    """Install the activation drop-in for systemd; True if it changed (then daemon-reload)."""
    from gnt_storage.deploy import bootstrap

    path, text = DROPIN.format(osd["id"]), dropin(osd)
    try:
        with open(path) as fh:
            if fh.read() == text:
                return False
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    bootstrap.write_file(path, text, 0o644)
    return True


# -- on the master: what the state keeps of ceph-volume's OSDs (pure) -------------------------------

def merge(state: dict[str, Any], report: dict[str, Any]) -> bool:
    """Record what a node reported of its ceph-volume OSDs (that they are, their stable names, the uuid
    ceph-volume chose) and give the cluster its bootstrap-osd key; True if the state changed."""
    changed = False
    for o in state["osds"]:
        new = report.get("osds", {}).get(o["id"], {})
        if any(o.get(k) != v for k, v in new.items()):
            o.update(new)
            changed = True
    if made_by_ceph_volume(state) and BOOTSTRAP not in state["keys"]:
        from gnt_storage.deploy import cephconf

        state["keys"][BOOTSTRAP] = cephconf.new_key()
        changed = True
    return changed


def made_by_ceph_volume(state: dict[str, Any]) -> set[str]:
    """OSD ids that ceph-volume registers with keys of its own: neither `osd new` nor `auth import` them."""
    return {o["id"] for o in state["osds"] if o.get("volume")}


def bootstrap_entry(state: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """client.bootstrap-osd for `auth import` and the nodes' keyring, once a ceph-volume OSD exists."""
    key = state["keys"].get(BOOTSTRAP)
    return {BOOTSTRAP: (key, BOOTSTRAP_CAPS)} if key else {}


def attach_db_wal(osds: list[dict[str, Any]], opts: Any) -> None:
    """Give new OSDs the DB and WAL devices paired with their disk (ceph:db, ceph:wal by position)."""
    for o in osds:
        i = opts.disk.index(o["dev"])
        o.update({key: getattr(opts, key)[i] for key in ("db", "wal") if getattr(opts, key)})
