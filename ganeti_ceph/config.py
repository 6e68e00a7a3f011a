"""The one config loader: /etc/ganeti/ceph.yaml, or $GANETI_CEPH_CONFIG.

Every key of the file is declared once, as a field of Config or Timeouts made
by `setting` (default, kind, help); KEYS is that table, flat and dotted, and
parse, dump and doc/configuration.md (scripts/config_doc.py) all walk it.
Parsing is a pure function of a mapping so it is unit-tested without files;
`load` is the only place that touches the filesystem.
"""

from __future__ import annotations

import contextlib
import math
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from ganeti_ceph.errors import ConfigError, GanetiCephError
from ganeti_ceph.naming import check_client_id, check_pool_name

DEFAULT_PATH = "/etc/ganeti/ceph.yaml"
ENV_VAR = "GANETI_CEPH_CONFIG"

# No Ceph call or action may wait longer than this, whatever the config says.
MAX_SECONDS = 86400


def _mapper_names() -> tuple[str, ...]:
    """The mapper registry's names (one module a mapper, found by ganeti_ceph.rbd.mappers)."""
    from ganeti_ceph.rbd import mappers

    return mappers.names()


# -- kinds of value: how one is read, and what the doc calls it ------------------------------

Reader = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Kind:
    """A kind of value: its reader (value, key) -> value, which raises a GanetiCephError
    whose message starts with the key, and its description for the doc."""

    text: str
    read: Reader
    choices: Callable[[], tuple[str, ...]] | None = None

    def describe(self) -> str:
        return f"{self.text}: {', '.join(self.choices())}" if self.choices else self.text


def _single(value: Any, key: str) -> str:
    """Any scalar as text; a list or mapping is refused before str() sees it (str() of a
    YAML alias bomb would not end)."""
    if isinstance(value, list | dict):
        raise ConfigError(f"{key} must be a single value, not a list or mapping")
    return str(value)


def _file(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"'{key}' must be set to a file path")
    return value


def _seconds(value: Any, key: str) -> float:
    """Seconds in (0, a day]: NaN compares false with everything and inf (or 1e300) never
    fires, so either would silently unbound the calls it governs."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0
            or value > MAX_SECONDS):
        raise ConfigError(f"{key} must be a positive number of seconds up to {MAX_SECONDS}, not {value!r}")
    return float(value)


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key} must be a whole number >= 0, not {value!r}")
    return value


def _abs_dir(value: Any, key: str) -> str:
    path = _single(value, key)
    if not os.path.isabs(path):
        raise ConfigError(f"{key} must be an absolute path, not {path!r}")
    return path


def _mapper(value: Any, key: str) -> str:
    name, names = _single(value, key), _mapper_names()
    if name not in names:
        raise ConfigError(f"{key} must be one of {', '.join(names)}, not {name!r}")
    return name


TEXT = Kind("text", _single)
FILE = Kind("file path", _file)
SECONDS = Kind(f"seconds, above 0, at most {MAX_SECONDS}", _seconds)
COUNT = Kind("whole number >= 0", _count)
ABS_DIR = Kind("absolute path", _abs_dir)
CLIENT = Kind("Ceph client id, without `client.`", lambda v, k: check_client_id(_single(v, k)))
POOL = Kind("pool name", lambda v, k: check_pool_name(_single(v, k)))
MAPPER = Kind("one of", _mapper, _mapper_names)
REQUIRED: Any = MISSING  # the default of a key that must be set


def setting(default: Any, kind: Kind, help: str, key: str = "") -> Any:
    """A dataclass field that is a key of the file (`key` when its name there differs)."""
    meta = {"kind": kind, "help": help, "key": key}
    return field(metadata=meta) if default is MISSING else field(default=default, metadata=meta)


# -- the keys ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Timeouts:
    """Seconds each kind of Ceph call may take; Ganeti itself has no timeout."""

    connect: float = setting(10.0, SECONDS, "reaching the monitors and authenticating")
    mon_op: float = setting(10.0, SECONDS, "each monitor command")
    osd_op: float = setting(30.0, SECONDS, "each OSD operation (librbd I/O included)")
    action: float = setting(300.0, SECONDS, "a whole provider action or hook: a watchdog ends the process after "
                                            "this, even if a C call ignores the other bounds")


@dataclass(frozen=True)
class Config:
    """How to reach one Ceph cluster as Ganeti's client."""

    conf: str = setting(REQUIRED, FILE, "the cluster's ceph.conf")
    keyring: str = setting(REQUIRED, FILE, "the keyring of `client` (keys are only ever named by their file)")
    client_id: str = setting("admin", CLIENT, "the Ceph client Ganeti acts as", key="client")
    cluster: str = setting("ceph", TEXT, "a name for the cluster in messages")
    pool: str = setting("rbd", POOL, "the pool of a Ganeti disk that names none")
    timeouts: Timeouts = field(default_factory=Timeouts, metadata={"help": "seconds; Ganeti itself never times "
                                                                           "out a provider or hook"})
    mapper: str = setting("krbd", MAPPER, "how kernelspace access maps an image to a block device")
    clone_max_depth: int = setting(4, COUNT, "a clone whose chain of parents would be longer is flattened")
    run_dir: str = setting("/run/ganeti-ceph", ABS_DIR, "where this node keeps its mapping links, locks and "
                                                        "fuse mounts")
    node: str = setting("", TEXT, "this node's name in the open records fencing reads; empty: the host name")
    catalogue: str = setting("/etc/ganeti/ceph-backends.yaml", ABS_DIR, "the backend catalogue shared by the "
                             "cluster (doc/backends.md); absent: one backend, this file's cluster and pool")
    source: str = "<memory>"  # where it was read from: not a key

    @property
    def node_name(self) -> str:
        """This node's name as recorded in locks (config `node`, else hostname)."""
        import socket  # here only: not loaded for every provider call

        return self.node or socket.gethostname()


@dataclass(frozen=True)
class Key:
    """One row of the table: a key as the file spells it (dotted when nested)."""

    name: str
    kind: Kind
    default: Any  # REQUIRED if it must be set
    help: str


def _key_fields(cls: type) -> Iterator[tuple[str, Field[Any]]]:
    """(name in the file, field) of each key of a dataclass, in declaration order."""
    for f in fields(cls):
        if f.metadata:
            yield f.metadata.get("key") or f.name, f


def _section(f: Field[Any]) -> Any:
    """The dataclass of a key that holds a mapping of keys (timeouts), else None."""
    return None if "kind" in f.metadata else f.default_factory


def _table() -> tuple[Key, ...]:
    rows = []
    for name, f in _key_fields(Config):
        if cls := _section(f):
            rows += [Key(f"{name}.{sub}", g.metadata["kind"], g.default, g.metadata["help"])
                     for sub, g in _key_fields(cls)]
        else:
            rows.append(Key(name, f.metadata["kind"], f.default, f.metadata["help"]))
    return tuple(rows)


KEYS = _table()
SECTIONS = {name: f.metadata["help"] for name, f in _key_fields(Config) if _section(f)}  # name -> help


# -- parse and dump ---------------------------------------------------------------------------

def read_keys(cls: type, data: dict, source: str, prefix: str = "") -> Any:
    """An instance of `cls` from `data`: unknown keys refused, each key present read by its
    kind, sections recursively; absent keys keep their defaults, a required one is refused."""
    names = [name for name, _ in _key_fields(cls)]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        what = f"{prefix[:-2]}(s)" if prefix else "setting(s)"  # "timeouts." -> "timeout(s)"
        raise ConfigError(f"{source}: unknown {what} {', '.join(unknown)}; allowed: {', '.join(sorted(names))}")
    args: dict[str, Any] = {}
    for name, f in _key_fields(cls):
        if sub := _section(f):
            value = data.get(name) or {}
            if not isinstance(value, dict):
                allowed = ", ".join(sorted(n for n, _ in _key_fields(sub)))
                raise ConfigError(f"{source}: '{name}' must be a mapping ({allowed})")
            args[f.name] = read_keys(sub, value, source, f"{name}.")
        elif name in data or f.default is MISSING:
            if name not in data and f.metadata["kind"] not in (FILE,):  # FILE says "must be set" itself
                raise ConfigError(f"{source}: '{prefix}{name}' must be set")
            try:
                args[f.name] = f.metadata["kind"].read(data.get(name), prefix + name)
            except GanetiCephError as exc:
                raise ConfigError(f"{source}: {exc.message}") from None
    return cls(**args)


def parse(data: Any, source: str = "<memory>") -> Config:
    """Build a Config from parsed YAML, refusing anything unknown or malformed."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings; see doc/configuration.md")
    return replace(read_keys(Config, data, source), source=source)


def as_data(obj: Any) -> dict[str, Any]:
    """The keys of a Config (or a section) as the file spells them; an empty text (node) is left out."""
    data = {}
    for name, f in _key_fields(type(obj)):
        value = getattr(obj, f.name)
        if _section(f):
            data[name] = as_data(value)
        elif value != "":
            data[name] = value
    return data


def dump(cfg: Config) -> str:
    """Render a Config as the YAML that `parse` reads back: the one writer of ganeti-ceph.yaml files."""
    import yaml

    return yaml.safe_dump(as_data(cfg), sort_keys=False)


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


def read_yaml(path: str, what: str = "config file", missing: str = "") -> Any:
    """The parsed YAML of `path`; a missing or bad file is one ConfigError (`missing`: what to do then).

    Opened without blocking and read only if it is a regular file: a FIFO would hang the call
    before its watchdog (set from the config file) runs; size and nesting are capped.
    """
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), encoding="utf-8") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ConfigError(f"{what} {path} is not a regular file; name the YAML file itself")
            text = fh.read(MAX_BYTES + 1)
        if len(text) > MAX_BYTES or _flow_depth(text) > MAX_DEPTH:  # yaml takes seconds per KiB of [[[...
            raise ConfigError(f"{what} {path} is over {MAX_BYTES} bytes or nests over {MAX_DEPTH} deep; "
                              "fix its content")
        return _pyyaml(text, f"{what} {path}")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found; {missing or 'create it'}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, RecursionError):
        raise ConfigError(f"{what} {path} is not UTF-8 YAML of a sane depth; fix its content") from None


def _pyyaml(text: str, name: str) -> Any:
    """yaml.safe_load of `text` (PyYAML imported here, by the calls that read a file)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{name} is not valid YAML{where}; fix its syntax") from None


def load(path: str | None = None) -> Config:
    """Read and parse the config file; a missing or bad file is one ConfigError.

    conf and keyring, when present, must be regular files: librados would block on a FIFO and
    read /dev/zero without end.
    """
    path = path or config_path()
    data = read_yaml(path, missing=f"create it (see doc/configuration.md) or set {ENV_VAR}")
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
