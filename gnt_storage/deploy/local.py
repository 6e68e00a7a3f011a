"""`gnt-storage local-cluster up|status|down`: a real single-host Ceph under one DIR.

1 mon (or 3 with --mons 3: one address, ports of their own, to test quorum
loss), 1 mgr, 3 OSDs (bluestore on sparse files), cephx, a replicated pool
initialised for RBD and a restricted client key for Ganeti, all bound to
127.0.0.1 on non-default ports. It is the embedded default for trying
ganeti-ceph and what every Ceph test runs against.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass

from ganeti_ceph import atomic, runner
from ganeti_ceph import config as gconfig
from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.errors import GanetiCephError, UsageError
from ganeti_ceph.log import progress
from ganeti_ceph.session import Session
from gnt_storage.deploy import admin, bootstrap, daemons
from gnt_storage.deploy.cephconf import ClusterSpec, Mon
from gnt_storage.deploy.daemons import Daemon

DEFAULT_DIR = "/var/lib/ganeti-ceph/local-cluster"
DEFAULT_PORT = 13300
PORT_SPAN = 100  # mon v2 = port, v1 = port+1 (3 mons: up to port+5), other daemons above, up to port+99
STATE = "local-cluster.json"
HOST = "127.0.0.1"
REQUIRED = ("ceph-mon", "ceph-osd", "ceph-mgr", "monmaptool")
OURS = ("ceph.conf", "seed.keyring", "monmap", "run", "log", "crash", "mon", "mgr", "osd",
        "ceph.client.admin.keyring", "ganeti-ceph.yaml", STATE, "extstorage", "extstorage-log")


@dataclass(frozen=True)
class Options:
    dir: str = DEFAULT_DIR
    port: int = DEFAULT_PORT
    osds: int = 3
    mons: int = 1
    osd_gib: int = 10
    pool: str = "rbd"
    client: str = "ganeti"
    wait: float = 120.0
    addr: str = HOST
    wipe: bool = False  # over an existing cluster: destroy it and every volume, then build anew


MON_IDS = "abc"


def mon_ids(count: int) -> list[str]:
    return list(MON_IDS[:count])


def spec_for(opts: Options, fsid: str) -> ClusterSpec:
    """Mon i binds port+2i (v2) and port+2i+1 (v1); the other daemons take the ports above the mons'."""
    mons = tuple(Mon(m, opts.addr, opts.port + 2 * i, opts.port + 2 * i + 1) for i, m in enumerate(mon_ids(opts.mons)))
    return ClusterSpec(
        fsid=fsid, root=os.path.abspath(opts.dir), mons=mons,
        public_network=f"{opts.addr}/32", port_min=opts.port + 2 * len(mons), port_max=opts.port + PORT_SPAN - 1,
        pool=opts.pool, client_id=opts.client, osd_bytes=opts.osd_gib * 1024**3,
        pool_size=min(2, opts.osds),
    )


def daemon_list(osds: int, mons: int = 1) -> list[Daemon]:
    return ([Daemon("mon", m) for m in mon_ids(mons)] + [Daemon("mgr", "x")]
            + [Daemon("osd", i) for i in bootstrap.osd_ids(osds)])


def admin_config(root: str, timeouts: Timeouts | None = None) -> Config:
    return admin.config(root, f"local ({root})", timeouts)


def client_config(spec: ClusterSpec) -> Config:
    from ganeti_ceph.rbd.mappers import detect

    return Config(conf=spec.conf_path, keyring=spec.keyring_path(f"client.{spec.client_id}"),
                  client_id=spec.client_id, cluster=f"local ({spec.root})", pool=spec.pool, mapper=detect())


def child_env() -> dict[str, str]:
    """A clean environment for Ceph tools: no inherited CEPH_ARGS or the like."""
    return runner.clean_env(os.environ.get("PATH", runner.SYSTEM_PATH), HOME="/root")


# -- preflight: every check runs before anything is started ------------------

def check_packages(env: dict[str, str]) -> None:
    missing = [b for b in REQUIRED if not shutil.which(b, path=env["PATH"])]
    if missing:
        raise GanetiCephError(
            f"Ceph is not installed ({', '.join(missing)} not found); "
            "install it: apt-get install ceph-mon ceph-osd ceph-mgr ceph-common"
        )


def check_dir(root: str) -> None:
    """DIR must be creatable and writable, and empty unless it is ours."""
    try:
        os.makedirs(root, mode=0o750, exist_ok=True)
        probe = os.path.join(root, ".write-test")
        atomic.write(probe, "")  # replaces, never follows, a link planted at the probe's name
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"directory {root} is not writable ({exc.strerror}); choose another with --dir") from None
    foreign = sorted(set(os.listdir(root)) - set(OURS) - {"ceph.client.ganeti.keyring"})
    if foreign and not os.path.exists(os.path.join(root, STATE)):
        raise UsageError(f"directory {root} is not empty and holds no local cluster; choose an empty --dir")


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens there (TIME_WAIT leftovers do not count:
    Ceph binds with SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_addr(addr: str) -> None:
    """The address must be one of this host's, so the daemons can bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((addr, 0))
        except OSError as exc:
            raise UsageError(f"cannot bind {addr} ({exc.strerror}); --addr must be an IPv4 address of this host"
                             ) from None


def check_ports(port: int, addr: str = HOST) -> None:
    if not 1024 <= port <= 65535 - PORT_SPAN:
        raise UsageError(f"--port {port} is out of range; use 1024..{65535 - PORT_SPAN}")
    busy = [p for p in range(port, port + PORT_SPAN) if port_in_use(p, addr)]
    if busy:
        raise UsageError(
            f"port {addr}:{busy[0]} is in use; local-cluster needs ports {port}-{port + PORT_SPAN - 1} "
            "free: choose another base with --port"
        )


# -- state ------------------------------------------------------------------

def read_state(root: str) -> dict | None:
    try:
        with open(os.path.join(root, STATE)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def running(root: str, state: dict) -> dict[str, int | None]:
    conf = os.path.join(root, "ceph.conf")
    return {d.name: daemons.running_pid(os.path.join(root, "run"), d, conf)
            for d in daemon_list(state["osds"], state.get("mons", 1))}


def stop_and_wipe(root: str, state: dict | None) -> list[str]:
    """Stop exactly our daemons, then remove only the files we created."""
    stopped = stop_all(root, state)
    remove_files(root, state)
    return stopped


def stop_all(root: str, state: dict | None) -> list[str]:
    """Unmap this cluster's devices here and kill its daemons at once: only
    called before its data is deleted, so a graceful shutdown buys nothing."""
    if state is None:
        return []
    _unmap_everything(root, state)
    return daemons.stop(daemon_list(state["osds"], state.get("mons", 1)), os.path.join(root, "run"),
                        os.path.join(root, "ceph.conf"), grace=0)


def remove_files(root: str, state: dict | None) -> None:
    for name in (*OURS, f"ceph.client.{(state or {}).get('client', 'ganeti')}.keyring"):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


def _unmap_everything(root: str, state: dict) -> None:
    """Mappings of this cluster on this node would hang once its daemons are gone."""
    from ganeti_ceph.rbd.mappers import for_config

    try:
        cfg = gconfig.load(os.path.join(root, "ganeti-ceph.yaml"))
        unmapped = for_config(cfg).unmap_all(state["fsid"])
    except GanetiCephError as exc:
        progress(f"could not unmap this cluster's devices: {exc.message}")
        return
    if unmapped:
        progress(f"unmapped {', '.join(unmapped)}")


# -- commands -----------------------------------------------------------------

def up(opts: Options) -> Config:
    """Bring a fresh cluster up, restart the stopped daemons of an existing one
    (its volumes kept), or say it already runs; return the client config.

    Only `opts.wipe` removes an existing cluster's data.
    """
    root = os.path.abspath(opts.dir)
    if opts.mons not in (1, 3):
        raise UsageError(f"--mons {opts.mons}: use 1 or 3")
    env = child_env()
    check_packages(env)
    state = read_state(root)
    if state is not None and not opts.wipe:
        return restart(root, state, opts.wait, env)
    if state is not None:
        progress(f"--wipe: removing the cluster in {root} (fsid {state['fsid']}) and every volume in it")
        stop_all(root, state)
    check_addr(opts.addr)
    check_ports(opts.port, opts.addr)  # before any wipe: a busy port leaves the old cluster's data in place
    if state is not None:
        remove_files(root, state)
    check_dir(root)  # last: it creates DIR, and a refused call leaves nothing behind
    spec = spec_for(opts, str(uuid.uuid4()))
    started = time.monotonic()
    state = {"fsid": spec.fsid, "port": opts.port, "osds": opts.osds, "pool": opts.pool, "client": opts.client}
    if opts.mons != 1:
        state["mons"] = opts.mons
    bootstrap.write_file(os.path.join(root, STATE), json.dumps(state, indent=1) + "\n")
    try:
        _bring_up(spec, opts, env)
    except BaseException:
        progress("bring-up failed: stopping the daemons started so far (logs kept in " + spec.path("log") + ")")
        daemons.stop(daemon_list(opts.osds, opts.mons), spec.path("run"), spec.conf_path)
        raise
    cfg = client_config(spec)
    bootstrap.write_file(spec.path("ganeti-ceph.yaml"), gconfig.dump(cfg))
    progress(f"cluster up and HEALTH_OK in {time.monotonic() - started:.1f} s")
    return cfg


def store_path(root: str, d: Daemon) -> str:
    """The file a daemon's finished store has: a stopped daemon restarts only from it."""
    return os.path.join(root, d.type, d.id, {"mon": "store.db", "mgr": "keyring", "osd": "ready"}[d.type])


def restart(root: str, state: dict, wait: float, env: dict[str, str]) -> Config:
    """Start the stopped daemons of an existing cluster from their stores; nothing is removed."""
    yaml = os.path.join(root, "ganeti-ceph.yaml")
    alive = running(root, state)
    if all(alive.values()):
        progress(f"local cluster in {root} is already running (fsid {state['fsid']}); nothing to do")
        return gconfig.load(yaml)
    wipe = f"to start over, destroying its volumes: local-cluster up --wipe --dir {root}"
    if not os.path.exists(yaml):
        raise GanetiCephError(f"the local cluster in {root} never finished its bring-up; {wipe}")
    todo = [d for d in daemon_list(state["osds"], state.get("mons", 1)) if not alive[d.name]]
    lost = [d.name for d in todo if not os.path.exists(store_path(root, d))]
    if lost:
        raise GanetiCephError(f"cannot restart {', '.join(lost)} in {root}: store missing; {wipe}")
    started = time.monotonic()
    conf, log = os.path.join(root, "ceph.conf"), os.path.join(root, "log")
    progress(f"restarting {', '.join(d.name for d in todo)} of the cluster in {root} (fsid {state['fsid']}); "
             "its data is kept")
    daemons.start([d for d in todo if d.type != "osd"], conf, log, env)
    with Session(admin_config(root, admin.timeouts(wait))) as session:
        osds = [d for d in todo if d.type == "osd"]
        epochs = bootstrap.boot_epochs(session)
        before = {d.id: epochs.get(d.id, 0) for d in osds}
        daemons.start(osds, conf, log, env)
        bootstrap.wait_booted(session, before, wait)
        bootstrap.wait_healthy(session, wait)
    progress(f"cluster up and HEALTH_OK in {time.monotonic() - started:.1f} s")
    return gconfig.load(yaml)


def _bring_up(spec: ClusterSpec, opts: Options, env: dict[str, str]) -> None:
    osds = bootstrap.osd_ids(opts.osds)
    progress(f"writing conf and keys for fsid {spec.fsid} in {spec.root}")
    bootstrap.write_cluster_files(spec, osds, "x")
    progress(f"creating the monitor and {len(osds)} OSD stores")
    uuids = bootstrap.mkfs_all(spec, osds, env)
    names = " ".join(f"mon.{m.id}" for m in spec.mons)
    progress(f"starting {names} and mgr.x on {opts.addr}:{opts.port}")
    daemons.start([Daemon("mon", m.id) for m in spec.mons] + [Daemon("mgr", "x")], spec.conf_path,
                  spec.path("log"), env)
    with Session(admin_config(spec.root, admin.timeouts(opts.wait))) as session:
        bootstrap.register_osds(session, uuids)
        bootstrap.require_modern_clients(session)
        bootstrap.create_pools(session, spec)
        progress(f"starting {len(osds)} OSDs")
        daemons.start([Daemon("osd", i) for i in osds], spec.conf_path, spec.path("log"), env)
        progress(f"initialising pool {spec.pool} for RBD")
        bootstrap.rbd_pool_init(session, spec.pool)
        progress("waiting for HEALTH_OK")
        bootstrap.wait_healthy(session, opts.wait)


def status(root: str) -> int:
    """Print daemons and health; exit 0 only when every daemon runs and health is OK."""
    root = os.path.abspath(root)
    state = read_state(root)
    if state is None:
        print(f"no local cluster in {root}")
        return 1
    alive = running(root, state)
    print(f"local cluster in {root}: fsid {state['fsid']}, conf {os.path.join(root, 'ceph.conf')}")
    for name, pid in alive.items():
        print(f"  {name:8} {'running, pid ' + str(pid) if pid else 'stopped'}")
    if not any(alive.values()):
        return 1
    with Session(admin_config(root, Timeouts(connect=5, mon_op=5, osd_op=5))) as session:
        line = bootstrap.settled_line(session.mon_command("status"))
    print(f"  health   {line}")
    return 0 if line == "HEALTH_OK" and all(alive.values()) else 1


def down(root: str) -> int:
    root = os.path.abspath(root)
    state = read_state(root)
    if state is None:
        progress(f"no local cluster in {root}; nothing to do")
        return 0
    stopped = stop_and_wipe(root, state)
    progress(f"stopped {', '.join(stopped) or 'no running daemon'} and removed the cluster data in {root}")
    with contextlib.suppress(OSError):
        os.rmdir(root)
    return 0
