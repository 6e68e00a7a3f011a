"""`gnt-storage init-distributed-storage -s ceph [-S ceph:...] GROUP`, run on the Ganeti master.

Steps, each converging (a re-run finds everything in place and says so):

1. ask Ganeti for the group's nodes; refuse if another group is the storage
   cluster; an empty group is only marked;
2. connect to every node over SSH (Ganeti's key, the cluster's host key) and
   probe it: Ceph installed, devices empty or already ours;
3. keep the cluster's identity (fsid, keys, OSD ids) in a state file on the
   master *before* touching any node, so an interrupted run resumes with it;
4. on every node at once (at most MAX_PARALLEL; `gnt_storage.deploy.node`
   there, one round trip per step): conf, keyrings, provider config and mon
   stores; then the OSD stores are made there while the mons (with a new
   cluster's mgrs) start and elect; from here mon commands go in-process
   (librados, bounded);
5. keys and OSD ids into the mons; mgrs and OSDs start on every node while
   the pools are made; initialise the pool for RBD;
6. wait for a settled HEALTH_OK while the group is marked (Ganeti tags: a
   job of seconds); print health.

A step that fails on some nodes names each of them, and which nodes did
finish it: a re-run resumes from there.

The Ceph side (conf rendering, keys, pools, health) is shared with
`gnt-storage local-cluster` (gnt_storage.deploy.cephconf, gnt_storage.deploy.bootstrap).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ganeti_ceph.config import Config
from ganeti_ceph.errors import GanetiCephError, UsageError
from ganeti_ceph.ganeti import Ganeti, GNode
from ganeti_ceph.log import progress
from ganeti_ceph.session import Session
from gnt_storage.deploy import admin, bootstrap, cephconf, options, volume
from gnt_storage.deploy.cephconf import ClusterSpec, Mon
from gnt_storage.deploy.options import STORAGE_TAG, StorageOptions
from gnt_storage.deploy.remote import Node, SshSettings, load_client_key, load_host_keys

STATE_DIR = "/var/lib/ganeti-ceph"
STATE = os.path.join(STATE_DIR, "storage.json")
MON_PORTS = (3300, 6789)
OSD_PORTS = (6800, 7300)
MAX_PARALLEL = 16  # nodes worked on at once (SSH sessions, node-side mkfs)


# -- the cluster's identity: kept on the master (and copied to each node) -----------

def new_state(group: str, opts: StorageOptions, mons: tuple[str, ...]) -> dict[str, Any]:
    keys = {e: cephconf.new_key() for e in ("mon.", "client.admin", f"client.{opts.client}")}
    keys.update({f"mgr.{m.split('.')[0]}": cephconf.new_key() for m in mons})
    return {"group": group, "fsid": str(uuid.uuid4()), "options": dataclasses.asdict(opts), "mons": list(mons),
            "keys": keys, "osds": []}


def add_osds(state: dict[str, Any], nodes: list[str], disks: tuple[str, ...]) -> list[dict[str, str]]:
    """Give every (node, device) without an OSD the next id; return the new ones (pure)."""
    have = {(o["node"], o["dev"]) for o in state["osds"]}
    next_id = max((int(o["id"]) for o in state["osds"]), default=-1) + 1
    added = []
    for node in sorted(nodes):
        for dev in disks:
            if (node, dev) not in have:
                osd = {"id": str(next_id), "node": node, "dev": dev, "uuid": str(uuid.uuid4())}
                state["keys"][f"osd.{next_id}"] = cephconf.new_key()
                state["osds"].append(osd)
                added.append(osd)
                next_id += 1
    return added


def state_options(state: dict[str, Any]) -> StorageOptions:
    o = dict(state["options"])
    o.update({k: tuple(o.get(k, ())) for k in options.DEVICE_KEYS})
    return StorageOptions(**o)


def check_registrable(group: str, ganeti: Ganeti | None = None) -> None:
    """--backend needs this master in `group`: its ceph.yaml, written by the bring-up, is how it
    reaches the cluster to register it (gnt-storage backend add checks the pool there)."""
    from ganeti_ceph.ganeti import ssconf

    master = ssconf.value("master_node") or ""
    members = [n.name for n in (ganeti or Ganeti()).nodes() if n.group == group]
    if master not in members:
        raise UsageError(f"--backend: this master ({master or 'unknown'}) is not a node of group {group}, so it "
                         "gets no ceph.yaml of that cluster to register it with; run without --backend and "
                         "declare the backend in the catalogue by hand (doc/backends.md)")


def pool() -> str:
    """The storage cluster's pool for Ganeti disks, as this master's state keeps it."""
    state = load_state()
    if state is None:
        raise UsageError(f"no storage cluster is kept on this master ({STATE})")
    return state_options(state).pool


def load_state(path: str = STATE) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise GanetiCephError(f"cannot read {path} ({exc}); restore it from a node of the storage group "
                              f"({STATE} there)") from None


def save_state(state: dict[str, Any], path: str = STATE) -> None:
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    bootstrap.write_file(path, json.dumps(state, indent=1, sort_keys=True) + "\n", 0o600)


# -- what each node gets (pure) -----------------------------------------------------------

@dataclass(frozen=True)
class Networks:
    """Ceph's public network (Ganeti's primary IPs) and cluster network (OSD replication), per node."""

    public: str = ""
    cluster: str = ""
    cluster_addrs: tuple[tuple[str, str], ...] = ()  # (node, its address on the cluster network)


def covering(addrs: list[str]) -> str:
    """The smallest network holding every address (pure): 10.1.0.3, 10.1.0.9 -> 10.1.0.0/28."""
    ips = [ipaddress.ip_address(a) for a in addrs]
    net = ipaddress.ip_network(ips[0])
    while not all(ip in net for ip in ips):
        net = net.supernet()
    return str(net)


def networks(gnodes: list[GNode], given: str) -> Networks:
    """Public = the primary IPs; cluster = `given`, else Ganeti's secondary network when the nodes have one.

    Each node replicates on its Ganeti address inside the cluster network
    (secondary first); a node without one is refused, naming the fix.
    """
    public = covering([g.pip for g in gnodes])
    secondary = any(g.sip and g.sip != g.pip for g in gnodes)
    if not given and not secondary:
        return Networks(public=public)
    net = ipaddress.ip_network(given) if given else ipaddress.ip_network(covering([g.sip or g.pip for g in gnodes]))
    addrs = []
    for g in gnodes:
        inside = [a for a in (g.sip, g.pip) if a and ipaddress.ip_address(a) in net]
        if not inside:
            raise UsageError(f"node {g.name} has no Ganeti address in ceph:cluster_network={net} (primary "
                             f"{g.pip}, secondary {g.sip or 'none'}): give the network of the nodes' secondary "
                             "IPs, or set them (gnt-node modify --secondary-ip)")
        addrs.append((g.name, inside[0]))
    return Networks(public=public, cluster=str(net), cluster_addrs=tuple(addrs))


def spec_of(state: dict[str, Any], addrs: dict[str, str], nets: Networks | None = None) -> ClusterSpec:
    opts = state_options(state)
    nets = nets or Networks()
    size = state.get("size") or min(3, len(addrs))
    mons = tuple(Mon(m.split(".")[0], addrs[m], *MON_PORTS) for m in state["mons"])
    daemon_addrs = [(f"mgr.{m.split('.')[0]}", addrs[m]) for m in state["mons"]]
    daemon_addrs += [(f"osd.{o['id']}", addrs[o["node"]]) for o in state["osds"] if o["node"] in addrs]
    node_caddr = dict(nets.cluster_addrs)
    cluster_addrs = [(f"osd.{o['id']}", node_caddr[o["node"]]) for o in state["osds"] if o["node"] in node_caddr]
    return ClusterSpec(fsid=state["fsid"], root="", mons=mons, public_network=nets.public, port_min=OSD_PORTS[0],
                       port_max=OSD_PORTS[1], pool=opts.pool, pg_num=opts.pg_num, pool_size=size,
                       pool_min_size=state.get("min_size") or size - size // 2, client_id=opts.client,
                       single_host=False, standard_paths=True, daemon_addrs=tuple(daemon_addrs),
                       cluster_network=nets.cluster, cluster_addrs=tuple(cluster_addrs))


def daemons_of(state: dict[str, Any], node: str, kinds: tuple[str, ...] = ("mon", "mgr", "osd")) -> list[list[str]]:
    short = node.split(".")[0]
    out = []
    if node in state["mons"]:
        out += [[k, short] for k in ("mon", "mgr") if k in kinds]
    if "osd" in kinds:
        out += [["osd", o["id"]] for o in state["osds"] if o["node"] == node]
    return out


def node_request(state: dict[str, Any], spec: ClusterSpec, node: str, action: str) -> dict[str, Any]:
    """The JSON a node's `gnt_storage.deploy.node` gets for `action` (probe, apply, start, stop)."""
    keys = state["keys"]
    client = f"client.{spec.client_id}"
    osds = [{**o, "fsid": state["fsid"],
             "keyring": cephconf.keyring({f"osd.{o['id']}": (keys[f"osd.{o['id']}"], cephconf.OSD_CAPS)})}
            for o in state["osds"] if o["node"] == node]
    req: dict[str, Any] = {"action": action, "node": node, "osds": osds, "daemons": daemons_of(state, node)}
    if action != "apply":
        return req
    admin = cephconf.keyring({"client.admin": (keys["client.admin"], cephconf.ADMIN_CAPS)})
    files = [
        {"path": spec.conf_path, "content": cephconf.render_conf(spec), "mode": 0o644, "owner": "root"},
        {"path": spec.keyring_path(client), "content": cephconf.keyring(
            {client: (keys[client], cephconf.rbd_client_caps(spec.pool))}), "mode": 0o600, "owner": "root"},
        {"path": STATE, "content": json.dumps(state, indent=1, sort_keys=True) + "\n", "mode": 0o600,
         "owner": "root"},
    ]
    if osds and volume.bootstrap_entry(state):
        files.append({"path": volume.BOOTSTRAP_KEYRING, "content": cephconf.keyring(volume.bootstrap_entry(state)),
                      "mode": 0o600, "owner": "root"})
    req["provider"] = {"keyring": spec.keyring_path(client), "client": spec.client_id, "pool": spec.pool,
                       "cluster": f"ceph {spec.fsid[:8]}", "osds": bool(osds)}
    if node in state["mons"]:
        short = node.split(".")[0]
        files.append({"path": spec.keyring_path("client.admin"), "content": admin, "mode": 0o600, "owner": "root"})
        # The mgrs' keys too: each mgr can then start with its mon, before anything else is imported.
        seed = cephconf.keyring({"mon.": (keys["mon."], cephconf.MON_CAPS),
                                 "client.admin": (keys["client.admin"], cephconf.ADMIN_CAPS),
                                 **{f"mgr.{m.split('.')[0]}": (keys[f"mgr.{m.split('.')[0]}"], cephconf.MGR_CAPS)
                                    for m in state["mons"]}})
        addv = [a for m in spec.mons for a in ("--addv", m.id, m.addrvec)]
        req["mons"] = [{"id": short, "fsid": spec.fsid, "addv": addv, "seed": seed}]
        req["mgrs"] = [{"id": short, "keyring": cephconf.keyring(
            {f"mgr.{short}": (keys[f"mgr.{short}"], cephconf.MGR_CAPS)})}]
    req["files"] = files
    return req


def auth_keyring(state: dict[str, Any], spec: ClusterSpec) -> bytes:
    """Every daemon and client key with its caps, for `auth import` (idempotent)."""
    keys = state["keys"]
    entries = {f"client.{spec.client_id}": (keys[f"client.{spec.client_id}"], cephconf.rbd_client_caps(spec.pool))}
    entries.update({e: (k, cephconf.MGR_CAPS) for e, k in keys.items() if e.startswith("mgr.")})
    entries.update({e: (k, cephconf.OSD_CAPS) for e, k in keys.items() if e.startswith("osd.")
                    and e[4:] not in volume.made_by_ceph_volume(state)})
    entries.update(volume.bootstrap_entry(state))
    return cephconf.keyring(entries).encode()


# -- talking to nodes ---------------------------------------------------------------------

def node_command() -> str:
    """Our node side, with the same interpreter as here (ganeti-ceph is installed alike on every node)."""
    return f"{sys.executable} -I -m gnt_storage.deploy.node"


def call(node: Node, req: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
    rc, out, err = node.run(node_command(), json.dumps(req).encode(), timeout=timeout)
    if rc != 0:
        text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip() or f"exit {rc}"
        if rc == 127 or "No module named" in text:
            text = f"ganeti-ceph is not installed there as on the master ({node_command()}): install it"
        raise GanetiCephError(f"node {node.name}: {text.splitlines()[-1]}")
    return json.loads(out)


def on_all(nodes: list[Node], fn: Any, what: str = "") -> list[Any]:
    """fn(node) on every node at once (at most MAX_PARALLEL at a time); every failure reported, naming
    its node, and, for a step `what`, which nodes did finish it; the first failure raised."""
    with ThreadPoolExecutor(max(1, min(len(nodes), MAX_PARALLEL))) as pool:
        futures = [pool.submit(fn, n) for n in nodes]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for e in errors[1:]:
            progress(f"also: {e}")
        done = [n.short for n, f in zip(nodes, futures, strict=True) if f.exception() is None]
        if what and done:
            progress(f"{what} finished on {', '.join(done)} only: run this again to resume from there")
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def connect_all(gnodes: list[GNode], settings: SshSettings) -> list[Node]:
    host_keys, client_key = load_host_keys(settings), load_client_key(settings)
    nodes = [Node(g.name, g.pip, settings) for g in gnodes]
    try:
        on_all(nodes, lambda n: n.connect(host_keys, client_key))
    except BaseException:
        for n in nodes:
            n.close()
        raise
    return nodes


def admin_config(state: dict[str, Any], spec: ClusterSpec, wait: float) -> Config:
    """The master's own admin access (it need not be in the group): conf + keyring in STATE_DIR."""
    conf, keyring = admin.files(STATE_DIR)
    bootstrap.write_file(conf, cephconf.render_conf(spec), 0o644)
    bootstrap.write_file(keyring, cephconf.keyring({"client.admin": (state["keys"]["client.admin"],
                                                                     cephconf.ADMIN_CAPS)}), 0o600)
    return group_admin(state["group"], wait)


def group_admin(group: str, wait: float = 0.0) -> Config:
    """client.admin of the group's cluster from this master's STATE_DIR (see admin.timeouts for `wait`)."""
    return admin.config(STATE_DIR, f"storage group {group}", admin.timeouts(wait))


# -- the command ----------------------------------------------------------------------------

def init(group: str, specs: list[str], wait: float = 300.0, ganeti: Ganeti | None = None,
         settings: SshSettings | None = None) -> int:
    ganeti = ganeti or Ganeti()
    started = time.monotonic()
    groups = ganeti.require_group(group)
    others = [g for g, tags in groups.items() if STORAGE_TAG in tags and g != group]
    if others:
        raise UsageError(f"node group {others[0]} is already the storage cluster; only one group can be "
                         f"(remove its tag {STORAGE_TAG} only if that cluster is gone)")
    state = load_state()
    if state is not None and state["group"] != group:
        raise UsageError(f"this master keeps the storage cluster of group {state['group']} ({STATE}); "
                         "only one group can be the storage cluster")
    base = state_options(state) if state else options.from_tags(ganeti.cluster_tags())
    opts = options.parse(specs, base)
    if state and dataclasses.replace(opts, disk=(), db=(), wal=()) != dataclasses.replace(base, disk=(), db=(), wal=()):
        raise UsageError("the storage cluster exists: only ceph:disk (db, wal) can change on a re-run "
                         "(pool, client, mons and sizes are fixed at init)")
    gnodes = [n for n in ganeti.nodes() if n.group == group]
    if not gnodes:
        if STORAGE_TAG not in groups[group]:
            ganeti.add_group_tags(group, [STORAGE_TAG])
        progress(f"node group {group} has no nodes: marked as the storage cluster; add nodes to it, "
                 "then run this again")
        return 0
    offline = [n.name for n in gnodes if n.offline]
    if offline and state is None:
        raise UsageError(f"node {offline[0]} of group {group} is offline: bring it online "
                         f"(gnt-node modify --offline no) or move it to another group first")
    online = [n for n in gnodes if not n.offline]
    layout = options.resolve(opts, [n.name for n in gnodes])
    settings = settings or SshSettings(alias=ganeti.cluster_name())
    progress(f"connecting to {len(online)} node(s) of group {group}: {', '.join(n.name for n in online)}")
    nodes = connect_all(online, settings)
    try:
        return _converge(group, ganeti, groups[group], state, opts, layout, gnodes, nodes, wait, started)
    finally:
        for n in nodes:
            n.close()


def _converge(group: str, ganeti: Ganeti, group_tags: list[str], state: dict[str, Any] | None, opts: StorageOptions,
              layout: options.Layout, gnodes: list[GNode], nodes: list[Node], wait: float, started: float) -> int:
    fresh = state is None
    if state is None:
        state = new_state(group, opts, layout.mons)
        state.update(size=layout.size, min_size=layout.min_size)
    state["options"].update({k: list(getattr(opts, k)) for k in options.DEVICE_KEYS})
    staged = json.loads(json.dumps(state))
    added = add_osds(staged, [n.name for n in gnodes], opts.disk)
    volume.attach_db_wal(added, opts)
    addrs = {g.name: g.pip for g in gnodes}
    spec = spec_of(staged, addrs, networks(gnodes, opts.cluster_network))
    # Probe before anything is written: bad devices or missing packages change nothing.
    reports = on_all(nodes, lambda n: call(n, node_request(staged, spec, n.name, "probe")))
    for r in reports:
        volume.merge(staged, r)
    problems = [f"node {n.name}: {', '.join(r['missing'])} not installed (apt-get install ceph-mon ceph-mgr "
                "ceph-osd)" for n, r in zip(nodes, reports, strict=True) if r["missing"]]
    problems += [f"node {n.name}: {dev} is {st}" for n, r in zip(nodes, reports, strict=True)
                 for dev, st in r["devices"].items() if st not in ("empty", "ours")]
    if problems:
        for p in problems[1:]:
            progress(p)
        raise UsageError(problems[0] + (f" (and {len(problems) - 1} more problem(s) above)" if problems[1:] else ""))
    state = staged
    save_state(state)
    progress(f"{'new cluster, fsid' if fresh else 'cluster fsid'} {state['fsid']}; mons on "
             f"{', '.join(m.split('.')[0] for m in state['mons'])}; {len(state['osds'])} OSD(s)"
             + (f", {len(added)} new" if added and not fresh else ""))

    pending: dict[str, list[str]] = {}

    def apply(n: Node, part: str, up_from: dict[str, int] | None = None) -> dict[str, Any]:
        """`part` of the node's apply: "files" (conf, keys, mon stores) or "osds" (OSD stores); the
        node's report, merged into the state by `merge` (in this thread: OSD stores are made beside it)."""
        req = node_request(state, spec, n.name, "apply")
        if part == "files":
            req["osds"] = []
        else:
            req = {k: v for k, v in req.items() if k not in ("files", "mons", "mgrs", "provider")}
        for o in req["osds"]:
            if up_from is not None:
                o["up_from"] = up_from.get(o["id"], 0)  # not in the osdmap: it never booted
        report = call(n, req)
        changed = report["changed"]
        if part == "osds":
            pending[n.name] = report.get("pending", [])
        waits = f"; osd.{', osd.'.join(pending[n.name])} wait for the osdmap" if pending.get(n.name) else ""
        if changed or part == "files":
            progress(f"{n.short}: " + (f"wrote {', '.join(changed)}" if changed else "files and stores in place")
                     + waits)
        elif waits:
            progress(f"{n.short}:{waits[1:]}")
        return report

    def merge(reports: list[dict[str, Any]]) -> None:
        if [volume.merge(state, r) for r in reports].count(True):
            save_state(state)

    merge(on_all(nodes, lambda n: apply(n, "files"), "writing files and mon stores"))
    # Daemons the probe found running need no start round trip (a re-run then takes ~2 s).
    running = {name for r in reports for name, up in r["running"].items() if up}
    # OSD stores are made (ceph-osd --mkfs, seconds) on every node while the mons start and elect a
    # leader: neither needs the other.
    with ThreadPoolExecutor(1) as bg:
        osd_stores = bg.submit(on_all, [n for n in nodes if daemons_of(state, n.name, ("osd",))],
                               lambda n: apply(n, "osds"), "making OSD stores")
        try:
            # A new cluster's mgrs start with the mons (their keys are in the mon stores from mkfs on).
            start([n for n in nodes if n.name in state["mons"]], state, spec, ("mon", "mgr") if fresh else ("mon",),
                  running)
            session = Session(admin_config(state, spec, wait))
            session.connect()
        except BaseException:
            _also(osd_stores)
            raise
        with session:
            merge(osd_stores.result())
            tags = [t for t in (STORAGE_TAG, f"{options.FSID_TAG_PREFIX}{state['fsid']}") if t not in group_tags]
            health = _daemons_up(state, spec, nodes, gnodes, pending, running, apply, merge, fresh or bool(added),
                                 wait, session, lambda: ganeti.add_group_tags(group, tags) if tags else None)
    progress(f"group {group} is the storage cluster: {health} in {time.monotonic() - started:.1f} s")
    print(f"health: {health}")
    print(f"fsid: {state['fsid']}")
    print(f"pool: {spec.pool} (size {spec.pool_size}, min_size {spec.pool_min_size}), client: client.{spec.client_id}")
    return 0


def _also(job: Future) -> None:
    """A failure is in flight: wait for the background step and say its own failure too."""
    if job.exception() is not None:
        progress(f"also: {job.exception()}")


def _daemons_up(state: dict[str, Any], spec: ClusterSpec, nodes: list[Node], gnodes: list[GNode],
                pending: dict[str, list[str]], running: set[str], apply: Any, merge: Any, new_pgs: bool,
                wait: float, session: Session, mark: Any) -> str:
    """Keys and OSD ids in the mons, mgrs and OSDs started, pools made and initialised; the health reached.
    `mark` (the group's tags: a Ganeti job of seconds) runs once every daemon started, beside the wait."""
    session.mon_command("auth import", inbuf=auth_keyring(state, spec))
    bootstrap.register_osds(session, {o["id"]: o["uuid"] for o in state["osds"]
                                      if o["id"] not in volume.made_by_ceph_volume(state)})
    waiting = [n for n in nodes if pending.get(n.name)]
    if waiting:  # stores of ours without a done-marker: redo only what never booted, adopt the rest
        up_from = bootstrap.boot_epochs(session)
        merge(on_all(waiting, lambda n: apply(n, "osds", up_from), "redoing OSD stores"))
    # mgrs and OSDs start on every node while the pools are made: PGs peer once the OSDs boot.
    with ThreadPoolExecutor(1) as bg:
        starting = bg.submit(start, nodes, state, spec, ("mgr", "osd"), running)
        try:
            bootstrap.require_modern_clients(session)
            bootstrap.create_pools(session, spec)
            session.mon_command("osd pool set", pool=spec.pool, var="size", val=str(spec.pool_size))
            session.mon_command("osd pool set", pool=spec.pool, var="min_size", val=str(spec.pool_min_size))
        except BaseException:
            _also(starting)
            raise
        starting.result()
    # OSDs of online nodes serve: in (a node back from offline had them marked out).
    ids = [o["id"] for o in state["osds"] if o["node"] in {n.name for n in nodes}]
    if ids:
        session.mon_command("osd in", ids=ids)
    with ThreadPoolExecutor(1) as bg:
        marking = bg.submit(mark)
        try:
            if new_pgs:
                progress(f"initialising pool {spec.pool} for RBD")
                bootstrap.rbd_pool_init(session, spec.pool)
            if len(nodes) == len(gnodes):
                health = bootstrap.wait_healthy(session, wait)
            else:
                progress(f"{len(gnodes) - len(nodes)} node(s) offline: their daemons stay stopped")
                health = bootstrap.settled_line(session.mon_command("status"))
        except BaseException:
            _also(marking)
            raise
        marking.result()
    return health


def start(nodes: list[Node], state: dict[str, Any], spec: ClusterSpec, kinds: tuple[str, ...],
          running: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Start the `kinds` daemons of each node that are not known to be running."""
    def one(n: Node) -> None:
        req = node_request(state, spec, n.name, "start")
        req["daemons"] = daemons_of(state, n.name, kinds)
        if all(f"{t}.{i}" in running for t, i in req["daemons"]):
            if req["daemons"]:
                progress(f"{n.short}: {', '.join(f'{t}.{i}' for t, i in req['daemons'])} running")
            return
        if req["daemons"]:
            changed = call(n, req)["changed"]
            progress(f"{n.short}: " + (f"started {', '.join(changed)}" if changed else
                                       f"{'/'.join(kinds)} daemons already running"))

    on_all(nodes, one)

