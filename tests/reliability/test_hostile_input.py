"""Hostile input (doc/reliability.md): parsing never fails but with our own error, and the real
executables turn hostile input into one stderr line, a non-zero exit, and no change anywhere.

Two halves. Properties (hypothesis, no Ceph): request parsing (extstorage/request.py) and config
parsing and loading (ganeti_ceph/config.py) return a valid value or raise UsageError/ConfigError,
never another exception. A sweep: the installed provider executables, run as ganeti-noded runs
them (tests/ceph/provider_env.py), and `gnt-storage`, given shell text, path traversal, odd bytes,
huge/negative/non-numeric sizes, unknown parameters and malformed or hostile configs (a YAML bomb,
deep nesting, wrong types, NaN timeouts, a FIFO or /dev/zero where a file belongs). Each must exit
non-zero with exactly one short stderr line and no traceback, within its bound, leave every image
of the cluster (size, metadata, snapshots, watchers, data) as it was, and create no file.
The totals go to the ledger as the `hostile-input` row: runs (executable runs plus hypothesis
examples), tracebacks (a traceback or "internal error" on stderr, or a property meeting another
exception), leaks (changes seen: files made, images changed, a payload run) and the longest
executable run against BOUND_S.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import rbd
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from extstorage import request
from ganeti_ceph import config, naming
from ganeti_ceph.errors import ConfigError, UsageError
from ganeti_ceph.naming import check_client_id, check_image_name, check_pool_name
from ganeti_ceph.rbd import mappers
from ganeti_ceph.session import Session
from tests.ceph.provider_env import MIB, Provider, provider_fixture
from tests.conftest import GNT_STORAGE, LocalCluster
from tests.reliability.ledger import Row

BOUND_S = 20.0  # every hostile run must end well within this (a hang is a failure, not a wait)
MAX_LINE = 1000  # "one line saying what is wrong": not a dump of the input


@dataclass
class Tally:
    runs: int = 0
    tracebacks: int = 0
    changes: int = 0
    max_s: float = 0.0  # the longest executable run (bound: BOUND_S)
    failed: set[str] = field(default_factory=set)  # properties that met another exception (once each)


TALLY = Tally()


@pytest.fixture(scope="module", autouse=True)
def record(ledger: Any) -> Iterator[None]:
    yield
    ledger.record(Row("hostile-input", runs=TALLY.runs, tracebacks=TALLY.tracebacks + len(TALLY.failed),
                      leaks=TALLY.changes, max_s=TALLY.max_s, bound_s=BOUND_S))


# -- properties: parsing (no Ceph) ----------------------------------------------------------------

SHELL = ["; rm -rf /", "$(touch /tmp/gct-pwned)", "`id`", "a|b", "a&&b", "'\"", "\\", "${IFS}"]
TRAVERSAL = ["..", ".", "../x", "../../etc/passwd", "/etc/passwd", "a/../b", "rbd/../rbd", ".hidden", "x/"]
NUMBERS = [str(2**70), str(2**64), "-1", "0", "1e3", "1.5", "0x40", " 64", "64 ", "+64", "6_4", "\u0661\u0662",
           "nan", "inf", "-0", "99999999999999999999999999999999999999999", "10; rm -rf /", ""]
ODD = ["\x01\x7f", "\u00e9", "\udcff", "a\nb", "abc\n", "\t", "\u202e", "x" * 300]
HOSTILE_TEXT = st.one_of(st.sampled_from(SHELL + TRAVERSAL + NUMBERS + ODD), st.text(max_size=30),
                         st.integers().map(str), st.floats().map(str))
VOLUMES = st.one_of(st.uuids().map(lambda u: f"{u}.ext.disk0"), HOSTILE_TEXT)
ENV_KEYS = st.one_of(
    st.sampled_from(["VOL_SIZE", "VOL_NEW_SIZE", "VOL_SNAPSHOT_NAME", "VOL_OPEN_EXCLUSIVE", "VOL_METADATA",
                     "VOL_UUID", "VOL_CNAME", "EXTP_PROVIDER",
                     *(f"EXTP_{p.upper()}" for p in request.PARAMETERS)]),
    st.text(max_size=12).map(lambda s: "EXTP_" + s))
ENVS = st.fixed_dictionaries({"VOL_NAME": VOLUMES}, optional={"VOL_SIZE": st.sampled_from(["64", "1"])}).flatmap(
    lambda base: st.dictionaries(ENV_KEYS, HOSTILE_TEXT, max_size=6).map(lambda more: {**base, **more}))


def counted() -> None:
    TALLY.runs += 1


@settings(database=None, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.one_of(st.sampled_from(request.ACTIONS), HOSTILE_TEXT), env=ENVS,
       default_pool=st.one_of(st.just("rbd"), HOSTILE_TEXT))
@example(action="create", env={"VOL_NAME": "abc\n", "VOL_SIZE": "64"}, default_pool="rbd")
@example(action="attach", env={"VOL_NAME": "abc", "EXTP_POOL": "rbd\n"}, default_pool="rbd")
@example(action="snapshot", env={"VOL_NAME": "abc", "VOL_SNAPSHOT_NAME": "s\n"}, default_pool="rbd")
def test_request_parsing_gives_a_request_or_a_usage_error(action: str, env: dict[str, str], default_pool: str
                                                          ) -> None:
    counted()
    try:
        req = request.parse(action, env, default_pool)
    except UsageError as exc:
        assert exc.message and "\n" not in exc.message
        return
    except Exception:
        TALLY.failed.add("request parsing")
        raise
    assert req.action in request.ACTIONS
    assert check_image_name(req.volume) == req.volume == env["VOL_NAME"]
    assert req.pool == default_pool == "" or check_pool_name(req.pool) == req.pool  # "": placement decides
    for name in (req.volume, req.pool or "x", req.params.get("data_pool", "x"), req.snapshot_name or "x"):
        assert name.isprintable() and name == name.strip(), f"{name!r} accepted as a name"
    for size in (req.size_mib, req.new_size_mib):
        assert size is None or (type(size) is int and 1 <= size <= naming.MAX_MIB)
    assert set(req.params) <= set(request.PARAMETERS) | set(request.GANETI_PARAMETERS)
    assert req.access in naming.ACCESS_MODES


@settings(database=None, max_examples=200, deadline=None)
@given(raw=st.one_of(HOSTILE_TEXT, st.integers(), st.booleans(), st.floats(), st.none()))
def test_sizes_are_whole_mib_in_range_or_a_usage_error(raw: Any) -> None:
    counted()
    try:
        value = naming.mib(raw, "VOL_SIZE")
    except UsageError:
        return
    assert type(value) is int and 1 <= value <= naming.MAX_MIB


YAML_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), HOSTILE_TEXT)
YAML_VALUES = st.recursive(YAML_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.one_of(HOSTILE_TEXT, st.integers()), inner, max_size=3),
                           max_leaves=12)
TOP_KEYS = sorted({k.name.split(".")[0] for k in config.KEYS})  # every key of the one table, and so every new one
TIMEOUT_KEYS = [k.name.removeprefix("timeouts.") for k in config.KEYS if k.name.startswith("timeouts.")]
TIMEOUTS = st.dictionaries(st.sampled_from([*TIMEOUT_KEYS, "bogus"]),
                           st.one_of(st.floats(), st.integers(), HOSTILE_TEXT, st.booleans()), max_size=4)
CONFIGS = st.one_of(
    YAML_VALUES,
    st.fixed_dictionaries({"conf": st.one_of(st.just("/etc/ceph/ceph.conf"), YAML_VALUES),
                           "keyring": st.one_of(st.just("/etc/ceph/k"), YAML_VALUES)},
                          optional={k: st.one_of(YAML_VALUES, TIMEOUTS) for k in TOP_KEYS
                                    if k not in ("conf", "keyring")}),
)


def valid_config(cfg: config.Config) -> None:
    """What every Config that parse returns must satisfy."""
    assert isinstance(cfg.conf, str) and cfg.conf and isinstance(cfg.keyring, str) and cfg.keyring
    check_client_id(cfg.client_id)
    check_pool_name(cfg.pool)
    assert cfg.mapper in mappers.names() and os.path.isabs(cfg.run_dir)
    assert type(cfg.clone_max_depth) is int and cfg.clone_max_depth >= 0
    for name in TIMEOUT_KEYS:
        value = getattr(cfg.timeouts, name)
        assert type(value) is float and math.isfinite(value) and value > 0, (name, value)


@settings(database=None, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=CONFIGS)
def test_config_parsing_gives_a_valid_config_or_a_config_error(data: Any) -> None:
    counted()
    try:
        cfg = config.parse(data, "hostile.yaml")
    except ConfigError as exc:
        assert exc.message.startswith("hostile.yaml")
        return
    except Exception:
        TALLY.failed.add("config parsing")
        raise
    valid_config(cfg)


@settings(database=None, max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.one_of(st.binary(max_size=200), CONFIGS.map(lambda d: yaml.safe_dump(d).encode(errors="replace")),
                         st.text(max_size=200).map(lambda s: s.encode(errors="surrogateescape"))))
def test_config_files_give_a_valid_config_or_a_config_error(content: bytes) -> None:
    counted()
    fd, path = tempfile.mkstemp(prefix="gct-F-hostile-", suffix=".yaml")
    try:
        os.write(fd, content)
        os.close(fd)
        try:
            cfg = config.load(path)
        except ConfigError:
            return
        except Exception:
            TALLY.failed.add("config loading")
            raise
        valid_config(cfg)
    finally:
        os.unlink(path)


# -- the sweep: real executables against the real cluster -------------------------------------------

@pytest.fixture(scope="module")
def scratch(local_cluster: LocalCluster) -> Iterator[str]:
    """Our files, beside the cluster's dir (pytest's shared temp root is pruned by concurrent sessions)."""
    base = tempfile.mkdtemp(prefix="hostile-", dir=os.path.dirname(os.path.abspath(local_cluster.dir)))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def prov(local_cluster: LocalCluster, scratch: str) -> Iterator[Provider]:
    os.makedirs(os.path.join(scratch, "provider"))
    yield from provider_fixture(local_cluster, os.path.join(scratch, "provider"))


@pytest.fixture(scope="module")
def victim(prov: Provider) -> Iterator[str]:
    """An existing volume with data and metadata, which no hostile call may change; made by one
    call of each kind the cases use, so that every file a first call creates exists before."""
    vol = prov.volume()
    for action, env in (("create", {"VOL_SIZE": "64"}), ("setinfo", {"VOL_METADATA": "originstname+victim"}),
                        ("verify", {}), ("open", {"VOL_OPEN_EXCLUSIVE": "True"}), ("close", {})):
        prov.run(action, vol, **env).ok()
    prov.write(vol, os.urandom(MIB))
    yield vol
    prov.run("remove", vol).ok()


def ceph_state(cluster: LocalCluster) -> dict[str, Any]:
    """Every image of every pool: size, metadata, snapshots, watchers, its first MiB; and the trash."""
    out: dict[str, Any] = {}
    with Session(cluster.admin) as s:
        for pool in s._cluster.list_pools():  # the admin's view: every pool
            with s.ioctx(pool) as io:
                for name in rbd.RBD().list(io):
                    with rbd.Image(io, name, read_only=True) as img:
                        out[f"{pool}/{name}"] = (img.size(), sorted(img.metadata_list()),
                                                 [x["name"] for x in img.list_snaps()],
                                                 sorted(w["addr"] for w in img.watchers_list()),
                                                 img.read(0, min(MIB, img.size())))
                out[f"{pool}/trash"] = sorted(e["name"] for e in rbd.RBD().trash_list(io))
    return out


SKIP_DIRS = ("mon", "osd", "mgr", "log")  # the cluster's own stores and logs change by themselves


def files(*roots: str) -> set[str]:
    """Every path under `roots` (not into the cluster daemons' stores), and its type."""
    out = set()
    for root in roots:
        for d, dirs, names in os.walk(root):
            if d == root:
                dirs[:] = [x for x in dirs if x not in SKIP_DIRS]
            out.update(os.path.join(d, n) for n in [*dirs, *names])
    return out


CANARY = "/tmp/gct-pwned"  # what the shell-text payloads would create if anything ran them


@dataclass
class Run:
    rc: int | None
    stdout: str
    stderr: str


def hostile(cluster: LocalCluster, scratch: str, run: Any, where: list[str] | None = None) -> Run:
    """Run one hostile call and check it: non-zero, one short line, no traceback, in bound,
    nothing changed in Ceph, no file created."""
    roots = [scratch, cluster.dir, *(where or [])]
    before, before_files = ceph_state(cluster), files(*roots)
    counted()
    started = time.monotonic()
    try:
        res = run()
        out = Run(res.returncode if hasattr(res, "returncode") else res.rc, res.stdout, res.stderr)
    except subprocess.TimeoutExpired as exc:
        out = Run(None, str(exc.stdout or ""), str(exc.stderr or ""))
    TALLY.max_s = max(TALLY.max_s, time.monotonic() - started)
    if "Traceback" in out.stderr or "internal error" in out.stderr:
        TALLY.tracebacks += 1
    changed = [f"created {p}" for p in sorted(files(*roots) - before_files)]
    after = ceph_state(cluster)
    changed += [f"Ceph: {k} changed" for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    if os.path.exists(CANARY):
        changed.append(f"created {CANARY}: shell text was run")
        os.unlink(CANARY)
    TALLY.changes += len(changed)
    lines = out.stderr.strip().splitlines()
    assert out.rc is not None, f"did not end within {BOUND_S} s"
    assert out.rc != 0, f"succeeded: {out.stdout!r} {out.stderr!r}"
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, f"expected one stderr line, got {out.stderr!r}"
    assert len(lines[0]) <= MAX_LINE, f"a {len(lines[0])}-character line"
    assert not changed, changed
    return out


# (case id, action, environment on top of the provider's; without VOL_NAME: a fresh volume name)
VIC = "@victim"  # replaced by the victim's name
PROVIDER_CASES: list[tuple[str, str, dict[str, str | None]]] = [
    *[(f"create-name-{i}", "create", {"VOL_NAME": name, "VOL_SIZE": "64"})
      for i, name in enumerate(["../etc/passwd", "/etc/passwd", ".", "..", ".hidden", "a;rm -rf /",
                                "$(touch /tmp/gct-pwned)", "`touch /tmp/gct-pwned`", "x\x01\x7fy", "\udcff",
                                "UPPER", "a" * 300, "", " "])],
    ("create-name-newline", "create", {"VOL_NAME": "newline-name\n", "VOL_SIZE": "64"}),
    *[(f"create-size-{i}", "create", {"VOL_SIZE": size})
      for i, size in enumerate([str(2**70), "-1", "1e3", "10; rm -rf /", "0x40", " 64", "\u0661", "nan", "inf",
                                "", str(2**41), "1.5"])],
    *[(f"create-{k.lower()}-{i}", "create", {"VOL_SIZE": "64", k: v})
      for k, vals in {"EXTP_POOL": ["../rbd", "/rbd", "rbd;ls", "rbd\n", "$(touch /tmp/gct-pwned)"],
                      "EXTP_DATA_POOL": ["../rbd", "rbd data"],
                      "EXTP_ORIGIN": ["../../etc/passwd", "rbd/../rbd/x@s", "@", "a@b@c", "rbd/" + VIC + "@../s",
                                      "nopool/none@snap"],
                      "EXTP_ADOPT_IMAGE": ["../" + VIC, "/" + VIC, "no-such-image"],
                      "EXTP_FEATURES": ["layering;rm -rf /", "../layering", "layering,,teleport"],
                      "EXTP_ACCESS": ["userspace; rm -rf /", "kernelspace\n"],
                      "EXTP_BOGUS": ["1"], "EXTP_POOL2": ["rbd"], "EXTP_": ["x"],
                      "EXTP_$(TOUCH /TMP/GCT-PWNED)": ["x"]}.items() for i, v in enumerate(vals)],
    ("create-adopt-and-origin", "create", {"VOL_SIZE": "64", "EXTP_ADOPT_IMAGE": VIC, "EXTP_ORIGIN": VIC}),
    *[(f"grow-{i}", "grow", {"VOL_NAME": VIC, "VOL_SIZE": "64", "VOL_NEW_SIZE": size})
      for i, size in enumerate([str(2**70), "-1", "1e3", "10; rm -rf /", "32", "0", "nan"])],
    *[(f"snapshot-{i}", "snapshot", {"VOL_NAME": VIC, "VOL_SNAPSHOT_NAME": name})
      for i, name in enumerate([VIC, ".", "..", "../x", "/abs", "$(touch /tmp/gct-pwned)"])],
    *[(f"{action}-name-{i}", action, {"VOL_NAME": name})
      for action in ("attach", "detach", "remove", "open", "close", "verify", "setinfo")
      for i, name in enumerate(["../" + VIC, "$(touch /tmp/gct-pwned)"])],
    ("open-exclusive-odd", "open", {"VOL_NAME": VIC, "VOL_OPEN_EXCLUSIVE": "1; rm -rf /"}),
    ("remove-unknown-param", "remove", {"VOL_NAME": VIC, "EXTP_BOGUS": "1"}),
    ("attach-pool-traversal", "attach", {"VOL_NAME": VIC, "EXTP_POOL": "../rbd"}),
]


def fill(value: str | None, victim: str) -> str | None:
    return None if value is None else value.replace(VIC, victim)


# Through the agent too (the executable hands the call to it): a case of each kind.
AGENT_CASES = {"create-name-0", "create-name-newline", "create-size-0", "create-size-3", "create-extp_pool-0",
               "create-extp_origin-0", "create-extp_bogus-0", "grow-0", "snapshot-0", "attach-name-0",
               "open-exclusive-odd", "yaml-bomb", "deep-nesting", "not-utf8", "timeout-nan", "config-fifo",
               "conf-fifo", "conf-dev-zero", "keyring-fifo"}


@pytest.fixture(scope="module")
def prov_agent(local_cluster: LocalCluster, scratch: str) -> Iterator[Provider]:
    os.makedirs(os.path.join(scratch, "agent"))
    yield from provider_fixture(local_cluster, os.path.join(scratch, "agent"), agent=True)


def caller(request: pytest.FixtureRequest, via: str) -> Provider:
    return request.getfixturevalue("prov_agent" if via == "agent" else "prov")


def with_agent(cases: list[tuple], ids: list[str]) -> Any:
    """Every case in-process, and those of AGENT_CASES through the agent too."""
    params = [pytest.param(*c, "in-process", id=i) for c, i in zip(cases, ids, strict=True)]
    return params + [pytest.param(*c, "agent", id=f"{i}-agent") for c, i in zip(cases, ids, strict=True)
                     if i.removesuffix("-create") in AGENT_CASES]


@pytest.mark.parametrize(("case", "action", "env", "via"), with_agent(PROVIDER_CASES, [c[0] for c in PROVIDER_CASES]))
def test_provider_refuses_hostile_input(request: pytest.FixtureRequest, victim: str, scratch: str, case: str,
                                        action: str, env: dict[str, str | None], via: str) -> None:
    prov = caller(request, via)
    env = {k.replace(VIC, victim): fill(v, victim) for k, v in env.items()}
    vol = env.pop("VOL_NAME", None)
    vol = f"{uuid.uuid4()}.ext.disk0" if vol is None else vol
    if vol != victim:
        prov.track(vol)
    hostile(prov.cluster, scratch, lambda: prov.run(action, vol, timeout=BOUND_S, **env))


# -- hostile configs ---------------------------------------------------------------------------------

def bomb(levels: int) -> str:
    """A billion-laughs YAML: `levels` aliases deep, 9 wide; its value flows into `client`."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


CONFIG_TEXTS: dict[str, str | bytes] = {
    "yaml-bomb": bomb(9) + "conf: /etc/ceph/ceph.conf\nkeyring: /etc/ceph/k\nclient: *l8\n",
    "yaml-bomb-key": bomb(6) + "*l5 : 1\n",
    "deep-nesting": "conf: " + "[" * 3000 + "]" * 3000 + "\n",
    "not-utf8": b"conf: /etc/ceph/ceph.conf\nkeyring: \xff\xfe\n",
    "python-tag": "conf: !!python/object/apply:os.system ['touch /tmp/gct-pwned']\nkeyring: /k\n",
    "not-a-mapping": "- conf\n- keyring\n",
    "empty": "",
    "conf-a-number": "conf: 5\nkeyring: /k\n",
    "timeouts-a-list": "conf: /c\nkeyring: /k\ntimeouts: [1, 2]\n",
    "timeout-nan": "conf: /c\nkeyring: /k\ntimeouts: {connect: .nan}\n",
    "timeout-inf": "conf: /c\nkeyring: /k\ntimeouts: {action: .inf}\n",
    "timeout-negative": "conf: /c\nkeyring: /k\ntimeouts: {connect: -1}\n",
    "timeout-string": "conf: /c\nkeyring: /k\ntimeouts: {connect: '10'}\n",
    "timeout-huge": "conf: /c\nkeyring: /k\ntimeouts: {osd_op: 1e400}\n",
    "depth-negative": "conf: /c\nkeyring: /k\nclone_max_depth: -1\n",
    "run-dir-relative": "conf: /c\nkeyring: /k\nrun_dir: ../../tmp\n",
    "run-dir-nul": 'conf: /c\nkeyring: /k\nrun_dir: "/tmp/a\\0b"\n',
    "mapper-shell": "conf: /c\nkeyring: /k\nmapper: 'krbd; touch /tmp/gct-pwned'\n",
    "pool-traversal": "conf: /c\nkeyring: /k\npool: ../rbd\n",
    "client-argv": "conf: /c\nkeyring: /k\nclient: 'admin --keyring /etc/shadow'\n",
    "unknown-key": "conf: /c\nkeyring: /k\nkeyring2: /k\n",
}


def special_file(kind: str, base: str) -> str:
    if kind == "fifo":
        path = os.path.join(base, "fifo")
        if not os.path.exists(path):
            os.mkfifo(path)
        return path
    return "/dev/zero"


CONFIG_FILE_CASES = [*sorted(CONFIG_TEXTS), "config-fifo", "config-dev-zero", "conf-fifo", "conf-dev-zero",
                     "keyring-fifo", "keyring-dev-zero"]


CONFIG_CALLS = [(k, "create") for k in CONFIG_FILE_CASES] + [
    (k, "attach") for k in CONFIG_FILE_CASES if k.endswith(("fifo", "zero"))]


@pytest.mark.parametrize(("kind", "action", "via"), with_agent(CONFIG_CALLS, [f"{k}-{a}" for k, a in CONFIG_CALLS]))
def test_provider_refuses_hostile_configs(request: pytest.FixtureRequest, victim: str, scratch: str, kind: str,
                                          action: str, via: str) -> None:
    """A malformed or hostile config (or one naming a FIFO or /dev/zero) is one line, and nothing changes."""
    prov = caller(request, via)
    base = os.path.join(scratch, "configs")
    os.makedirs(base, exist_ok=True)
    if kind in CONFIG_TEXTS:
        path = os.path.join(base, f"{kind}.yaml")
        text = CONFIG_TEXTS[kind]
        with open(path, "wb") as fh:
            fh.write(text if isinstance(text, bytes) else text.encode())
    elif kind.startswith("config-"):
        path = special_file(kind.removeprefix("config-"), base)
    else:
        key, special = kind.split("-", 1)
        path = prov.config(f"hostile-{kind}", **{key: special_file(special, base)})
    vol = victim if action == "attach" else prov.track(f"{uuid.uuid4()}.ext.disk0")
    try:
        hostile(prov.cluster, scratch, lambda: prov.run(action, vol, path, timeout=BOUND_S, VOL_SIZE="64"))
    finally:
        with contextlib.suppress(OSError):  # a reader still blocked on the FIFO: let it go
            os.close(os.open(os.path.join(base, "fifo"), os.O_WRONLY | os.O_NONBLOCK))


# -- gnt-storage --------------------------------------------------------------------------------------

def gnt(cwd: str, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
    return subprocess.run([GNT_STORAGE, *args], capture_output=True, text=True, timeout=BOUND_S, env=env,
                          cwd=cwd, stdin=subprocess.DEVNULL, check=False)


GNT_CASES: list[tuple[str, list[str]]] = [
    *[(f"up-port-{i}", ["local-cluster", "up", "--dir", "@new", "--port", port])
      for i, port in enumerate(["abc", "1e3", "10; rm -rf /", str(2**70), "-1", "0"])],
    ("up-osds-huge", ["local-cluster", "up", "--dir", "@new", "--osds", str(2**70)]),
    ("up-mons-2", ["local-cluster", "up", "--dir", "@new", "--mons", "2"]),
    *[(f"up-wait-{i}", ["local-cluster", "up", "--dir", "@new", "--port", "@port", "--wait", w])
      for i, w in enumerate(["nan", "-1", "inf", "0"])],
    *[(f"up-pool-{i}", ["local-cluster", "up", "--dir", "@new", "--port", "@port", "--pool", pool])
      for i, pool in enumerate(["; rm -rf /", "../rbd", "$(touch /tmp/gct-pwned)", "rbd\n", ""])],
    *[(f"up-client-{i}", ["local-cluster", "up", "--dir", "@new", "--port", "@port", "--client", c])
      for i, c in enumerate(["client.admin", "admin --keyring /etc/shadow", "../x", "\udcff"])],
    ("up-addr-shell", ["local-cluster", "up", "--dir", "@new", "--port", "@port", "--addr", "127.0.0.1; id"]),
    ("up-dir-traversal", ["local-cluster", "up", "--dir", "@foreign", "--port", "@port"]),
    ("up-dir-dev-zero", ["local-cluster", "up", "--dir", "/dev/zero", "--port", "@port"]),
    ("rbd-access-mode", ["rbd-access", "inst1", "; rm -rf /"]),
    ("rbd-access-traversal", ["rbd-access", "../../etc/passwd", "kernelspace"]),
    ("rbd-access-shell", ["rbd-access", "$(touch /tmp/gct-pwned)", "userspace"]),
    ("ids-type", ["init-distributed-storage", "-s", "lvm; rm -rf /", "default"]),
    ("ids-spec", ["init-distributed-storage", "-s", "ceph", "-S", "ceph:disk=../../dev/sda;rm -rf /", "default"]),
    ("ids-wait-nan", ["init-distributed-storage", "-s", "ceph", "--wait", "nan", "default"]),
    ("options-set-shell", ["-S", "ceph:pool=$(touch /tmp/gct-pwned)"]),
    ("options-set-odd", ["-S", "ceph:\x01=\x7f", "-X"]),
]


@pytest.mark.parametrize(("case", "args"), GNT_CASES, ids=[c[0] for c in GNT_CASES])
def test_gnt_storage_refuses_hostile_input(local_cluster: LocalCluster, scratch: str, case: str, args: list[str]
                                           ) -> None:
    """`gnt-storage` given hostile arguments: one line, non-zero, no cluster started, no file created.
    (`--port` given is the running test cluster's own, so a bring-up that got past the checks it
    should have failed would stop at the busy port rather than start a cluster.)"""
    new = os.path.join(scratch, f"gnt-{case}", "cluster")
    foreign = os.path.join(scratch, "foreign")  # someone else's non-empty dir, reached by ../
    os.makedirs(foreign, exist_ok=True)
    os.makedirs(os.path.join(scratch, "configs"), exist_ok=True)  # the cwd, made before the "before" snapshot
    with open(os.path.join(foreign, "theirs"), "w") as fh:
        fh.write("not a cluster\n")
    up_and_over = os.path.join(*[".."] * 6, *os.path.abspath(foreign).split(os.sep)[1:])
    port = str(int(os.environ.get("GANETI_CEPH_TEST_PORT", "13300")))  # the running cluster's: busy
    argv = [{"@new": new, "@port": port, "@foreign": up_and_over}.get(a, a) for a in args]
    try:
        hostile(local_cluster, scratch, lambda: gnt(os.path.join(scratch, "configs"), *argv))
    finally:
        shutil.rmtree(os.path.join(scratch, f"gnt-{case}"), ignore_errors=True)
    assert not os.path.exists(new)


def test_special_files_stay_special(scratch: str) -> None:
    """The FIFO the config cases used is still a FIFO (nothing replaced it with a file)."""
    path = os.path.join(scratch, "configs", "fifo")
    if os.path.exists(path):
        assert stat.S_ISFIFO(os.lstat(path).st_mode)
