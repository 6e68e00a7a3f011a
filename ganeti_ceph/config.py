"""The one config loader: /etc/ganeti/ceph.yaml, or $GANETI_CEPH_CONFIG.

Parsing is a pure function of a mapping so it is unit-tested without files;
`load` is the only place that touches the filesystem.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import stat
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from ganeti_ceph.errors import ConfigError, GanetiCephError
from ganeti_ceph.naming import check_client_id, check_pool_name

DEFAULT_PATH = "/etc/ganeti/ceph.yaml"
ENV_VAR = "GANETI_CEPH_CONFIG"


@dataclass(frozen=True)
class Timeouts:
    """Seconds each kind of Ceph call may take; Ganeti itself has no timeout."""

    connect: float = 10.0
    mon_op: float = 10.0
    osd_op: float = 30.0
    # Backstop for a whole provider action or hook: a watchdog ends the
    # process after this, even if a C call ignores the other bounds.
    action: float = 300.0


# No Ceph call or action may wait longer than this, whatever the config says.
MAX_SECONDS = 86400

MAPPERS = ("krbd", "rbd-nbd", "fuse-loop")


@dataclass(frozen=True)
class Config:
    """How to reach one Ceph cluster as Ganeti's client."""

    conf: str
    keyring: str
    client_id: str = "admin"
    cluster: str = "ceph"
    pool: str = "rbd"
    timeouts: Timeouts = field(default_factory=Timeouts)
    mapper: str = "krbd"
    clone_max_depth: int = 4
    run_dir: str = "/run/ganeti-ceph"
    node: str = ""
    source: str = "<memory>"

    @property
    def node_name(self) -> str:
        """This node's name as recorded in locks (config `node`, else hostname)."""
        return self.node or socket.gethostname()


_TOP_KEYS = {"cluster", "conf", "client", "keyring", "pool", "timeouts", "mapper", "clone_max_depth", "run_dir",
             "node"}


def _number(value: Any, where: str) -> float:
    """Seconds in (0, a day]: NaN compares false with everything and inf (or
    1e300) never fires, so either would silently unbound the calls it governs."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
            or value > MAX_SECONDS):
        raise ConfigError(f"{where} must be a positive number of seconds up to {MAX_SECONDS}, not {value!r}")
    return float(value)


def parse(data: Any, source: str = "<memory>") -> Config:
    """Build a Config from parsed YAML, refusing anything unknown or malformed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings; see doc/configuration.md")
    unknown = sorted(set(map(str, data)) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    for key in ("conf", "keyring"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ConfigError(f"{source}: '{key}' must be set to a file path")
    tdata = data.get("timeouts") or {}
    if not isinstance(tdata, dict):
        raise ConfigError(f"{source}: 'timeouts' must be a mapping (connect, mon_op, osd_op)")
    names = {f.name for f in fields(Timeouts)}
    bad = sorted(set(map(str, tdata)) - names)
    if bad:
        raise ConfigError(f"{source}: unknown timeout(s) {', '.join(bad)}; allowed: {', '.join(sorted(names))}")
    timeouts = Timeouts(**{k: _number(v, f"{source}: timeouts.{k}") for k, v in tdata.items()})
    nested = sorted(k for k in _TOP_KEYS - {"timeouts"} if isinstance(data.get(k), list | dict))
    if nested:  # str() of a YAML alias bomb would not end
        raise ConfigError(f"{source}: {', '.join(nested)} must be a single value, not a list or mapping")
    client = str(data.get("client", "admin"))
    pool = str(data.get("pool", "rbd"))
    try:
        check_client_id(client)
        check_pool_name(pool)
    except Exception as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    mapper = str(data.get("mapper", "krbd"))
    if mapper not in MAPPERS:
        raise ConfigError(f"{source}: mapper must be one of {', '.join(MAPPERS)}, not {mapper!r}")
    depth = data.get("clone_max_depth", 4)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ConfigError(f"{source}: clone_max_depth must be a whole number >= 0, not {depth!r}")
    run_dir = str(data.get("run_dir", "/run/ganeti-ceph"))
    if not os.path.isabs(run_dir):
        raise ConfigError(f"{source}: run_dir must be an absolute path, not {run_dir!r}")
    return Config(
        mapper=mapper,
        clone_max_depth=depth,
        run_dir=run_dir,
        node=str(data.get("node", "")),
        conf=data["conf"],
        keyring=data["keyring"],
        client_id=client,
        cluster=str(data.get("cluster", "ceph")),
        pool=pool,
        timeouts=timeouts,
        source=source,
    )


def dump(cfg: Config) -> str:
    """Render a Config as the YAML that `parse` reads back."""
    data = {
        "cluster": cfg.cluster,
        "conf": cfg.conf,
        "client": cfg.client_id,
        "keyring": cfg.keyring,
        "pool": cfg.pool,
        "timeouts": {f.name: getattr(cfg.timeouts, f.name) for f in fields(Timeouts)},
        "mapper": cfg.mapper,
        "clone_max_depth": cfg.clone_max_depth,
        "run_dir": cfg.run_dir,
    }
    if cfg.node:
        data["node"] = cfg.node
    return yaml.safe_dump(data, sort_keys=False)


def config_path(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(ENV_VAR) or DEFAULT_PATH


MAX_BYTES = 64 << 10  # a config is well under 1 KiB
MAX_DEPTH = 32


def _flow_depth(text: str) -> int:
    """How deep [ and { nest (quotes ignored: an overestimate is only a refusal of an odd file)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def load(path: str | None = None) -> Config:
    """Read and parse the config file; a missing or bad file is one ConfigError.

    Opened without blocking and read only if it is a regular file: a FIFO would hang the call
    before its watchdog (set from this very file) runs. conf and keyring, when present, must be
    regular files too: librados would block on a FIFO and read /dev/zero without end.
    """
    path = path or config_path()
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), encoding="utf-8") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(f"config file {path} is not a regular file; point {ENV_VAR} at the YAML file")
            text = fh.read(MAX_BYTES + 1)
        if len(text) > MAX_BYTES or _flow_depth(text) > MAX_DEPTH:  # yaml takes seconds per KiB of [[[...
            raise ConfigError(f"config file {path} is over {MAX_BYTES} bytes or nests over {MAX_DEPTH} deep; "
                              "fix its content")
        data = yaml.safe_load(text)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found; create it (see doc/configuration.md) or set {ENV_VAR}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    except (UnicodeDecodeError, RecursionError):
        raise ConfigError(f"config file {path} is not UTF-8 YAML of a sane depth; fix its content") from None
    cfg = parse(data, path)
    for key in ("conf", "keyring"):
        with contextlib.suppress(OSError):  # a missing file is reported where it is used
            if not stat.S_ISREG(os.stat(getattr(cfg, key)).st_mode):
                raise ConfigError(f"{path}: {key} {getattr(cfg, key)} is not a regular file; name the file itself")
    return cfg


def action_timeout(env: dict[str, str]) -> float:
    """timeouts.action of the config `env` names (a default if it cannot be read): the bound
    a watchdog sets before anything else can fail, for the provider's calls and the hooks."""
    try:
        return load(config_path(env)).timeouts.action
    except GanetiCephError:
        return Timeouts().action


def conf_fsid(conf_path: str) -> str | None:
    """The fsid in a ceph.conf, if written there: knowing it saves a connect."""
    try:
        with open(conf_path) as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep and key.strip().replace(" ", "_") == "fsid":
                    return value.strip()
    except OSError:
        return None
    return None
