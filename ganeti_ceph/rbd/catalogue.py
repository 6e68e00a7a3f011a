"""The catalogue of backends: where volumes can live, and what each place may take.

A backend is a pool (optionally an RBD namespace in it, a data pool) of one
Ceph cluster as Ganeti's client reaches it, with tags, a cost per GiB, an
overcommit ratio and quotas. The catalogue is one YAML file shared by the
cluster (config key `catalogue`, doc/backends.md), written by
`gnt-storage backend add|modify|remove` and copied to every node. Without
that file there is one backend, `default`: the cluster and pool of
/etc/ganeti/ceph.yaml, with no limits, so nothing changes for a cluster
that never made a catalogue. Every key is declared once, below, with the
config's own kinds; parse and dump walk that table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from ganeti_ceph.config import COUNT, FILE, POOL, REQUIRED, TEXT, Config, Kind, as_data, read_keys, read_yaml, setting
from ganeti_ceph.errors import ConfigError, UsageError
from ganeti_ceph.naming import check_client_id

DEFAULT = "default"  # the backend of /etc/ganeti/ceph.yaml
NAME_MAX = 64


def check_backend_name(name: str) -> str:
    """Backend names as Ganeti parameter values carry them: letters, digits, '_', '-'."""
    if not (0 < len(name) <= NAME_MAX and name.replace("_", "").replace("-", "").isalnum() and name.isascii()):
        raise UsageError(f"invalid backend name {name!r}: use letters, digits, '_' and '-' (at most {NAME_MAX})")
    return name


def check_tag(tag: str) -> str:
    if not (0 < len(tag) <= NAME_MAX and tag.replace("_", "").replace("-", "").replace(".", "").isalnum()
            and tag.isascii()):
        raise UsageError(f"invalid tag {tag!r}: use letters, digits, '.', '_' and '-' (at most {NAME_MAX})")
    return tag


def parse_tags(text: str) -> tuple[str, ...]:
    """`a+b` or `a,b` (the disk parameter `tags`, --tags): sorted, each checked."""
    return tuple(sorted({check_tag(t.strip()) for t in text.replace(",", "+").split("+") if t.strip()}))


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key} must be a number >= 0, not {value!r}")
    return float(value)


def _tags(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.replace(",", "+").split("+")
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key} must be a list of tags, not {value!r}")
    try:
        return tuple(sorted({check_tag(str(t)) for t in value}))
    except UsageError as exc:
        raise ConfigError(f"{key}: {exc.message}") from None


def _name(value: Any, key: str) -> str:
    try:
        return check_backend_name(str(value) if isinstance(value, str | int) else "")
    except UsageError as exc:
        raise ConfigError(f"{key}: {exc.message}") from None


def _client(value: Any, key: str) -> str:
    return check_client_id(str(value)) if value else ""


NUMBER = Kind("number >= 0", _number)
TAGS = Kind("list of tags", _tags)
NAME = Kind("backend name", _name)
OPT_POOL = Kind("pool name, or empty", lambda v, k: POOL.read(v, k) if v else "")
def _path(value: Any, key: str) -> str:
    """An absolute path QEMU's rbd: filename can carry (no ':', ',' or white space), or empty."""
    if not value:
        return ""
    path = FILE.read(value, key)
    if not os.path.isabs(path) or any(c in path for c in ":,") or any(c.isspace() for c in path):
        raise ConfigError(f"{key} must be an absolute path without ':', ',' or spaces, not {path!r}")
    return path


OPT_FILE = Kind("absolute file path, or empty: ceph.yaml's", _path)
OPT_CLIENT = Kind("Ceph client id, or empty: ceph.yaml's", _client)


@dataclass(frozen=True)
class Backend:
    """One place volumes live; empty conf/keyring/client mean ceph.yaml's (the same cluster)."""

    name: str = setting(REQUIRED, NAME, "the backend's name (disk parameter backend=NAME)")
    pool: str = setting(REQUIRED, POOL, "the pool its volumes live in")
    namespace: str = setting("", OPT_POOL, "an RBD namespace in the pool (made by backend add), or empty")
    data_pool: str = setting("", OPT_POOL, "a pool for the volumes' data objects (e.g. erasure-coded), or empty")
    conf: str = setting("", OPT_FILE, "the cluster's ceph.conf, on every node")
    keyring: str = setting("", OPT_FILE, "the keyring of `client`, on every node")
    client_id: str = setting("", OPT_CLIENT, "the Ceph client Ganeti acts as there", key="client")
    cluster: str = setting("", TEXT, "a name for the cluster in messages (empty: ceph.yaml's)")
    tags: tuple[str, ...] = setting((), TAGS, "what it offers (ssd, replicated, zone-a): placement by tags=a+b")
    cost: float = setting(0.0, NUMBER, "cost per GiB: placement picks the cheapest backend with room")
    overcommit: float = setting(1.0, NUMBER, "provisioned GiB may reach capacity times this (0: no check)")
    quota_gib: float = setting(0.0, NUMBER, "provisioned GiB at most (0: no quota)")
    quota_volumes: int = setting(0, COUNT, "volumes at most (0: no quota)")

    @property
    def location(self) -> str:
        """The pool as the volume service names it: `pool`, or `pool/namespace`."""
        return f"{self.pool}/{self.namespace}" if self.namespace else self.pool

    def config(self, cfg: Config) -> Config:
        """ceph.yaml's config, pointed at this backend's cluster (node settings kept)."""
        return replace(cfg, conf=self.conf or cfg.conf, keyring=self.keyring or cfg.keyring,
                       client_id=self.client_id or cfg.client_id, cluster=self.cluster or cfg.cluster)

    def same_cluster(self, other: Backend) -> bool:
        return (self.conf, self.keyring, self.client_id) == (other.conf, other.keyring, other.client_id)


@dataclass(frozen=True)
class Project:
    """A project: the instances tagged `<project_tag><name>`, and its quotas (0: none)."""

    name: str = setting(REQUIRED, NAME, "the project's name")
    quota_gib: float = setting(0.0, NUMBER, "GiB of disks its instances may have at most (0: no quota)")
    quota_volumes: int = setting(0, COUNT, "disks its instances may have at most (0: no quota)")


@dataclass(frozen=True)
class Catalogue:
    """The backends (the default first) and projects; `declared`: read from a file."""

    backends: tuple[Backend, ...]
    projects: tuple[Project, ...] = ()
    project_tag: str = "project:"
    index: str = DEFAULT  # the backend whose pool holds the placement records
    declared: bool = False
    source: str = "<memory>"
    _by_name: dict[str, Backend] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {b.name: b for b in self.backends})

    @classmethod
    def of(cls, cfg: Config) -> Catalogue:
        """Only the default backend, from ceph.yaml (no file read)."""
        return cls((default_backend(cfg),))

    @property
    def default(self) -> Backend:
        return self._by_name[DEFAULT]

    @property
    def backend(self) -> Backend:
        """The default backend (the one a catalogue without file has)."""
        return self.default

    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def get(self, name: str) -> Backend:
        if name not in self._by_name:
            raise UsageError(f"unknown backend {name!r}; known: {', '.join(self.names())} "
                             "(gnt-storage backend list)")
        return self._by_name[name]

    def project(self, name: str) -> Project | None:
        return next((p for p in self.projects if p.name == name), None)

    def pool(self, pool: str) -> str:
        """The pool a volume lives in: the one it names, else (empty) the default backend's."""
        return pool or self.default.location

    def backend_of(self, pool: str) -> Backend:
        """The default cluster's backend holding `pool` (a volume that names a pool, no backend)."""
        return next((b for b in self.backends if b.location == pool and b.same_cluster(self.default)), self.default)


def default_backend(cfg: Config) -> Backend:
    return Backend(name=DEFAULT, pool=cfg.pool, overcommit=0.0)


# -- the file --------------------------------------------------------------------------------

FILE_KEYS = ("backends", "projects", "project_tag", "index")


def parse(data: Any, cfg: Config, source: str = "<memory>") -> Catalogue:
    """A Catalogue from the file's YAML; anything unknown, malformed, repeated or dangling refused."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with backends (doc/backends.md)")
    unknown = sorted(set(map(str, data)) - set(FILE_KEYS))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(FILE_KEYS)}")
    backends = [read_keys(Backend, b, source, "backends.") for b in _entries(data, "backends", source)]
    if not any(b.name == DEFAULT for b in backends):
        backends.insert(0, default_backend(cfg))
    else:
        backends.sort(key=lambda b: b.name != DEFAULT)
    projects = [read_keys(Project, p, source, "projects.") for p in _entries(data, "projects", source)]
    for what, names in (("backend", [b.name for b in backends]), ("project", [p.name for p in projects])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{source}: {what} {', '.join(dup)} declared twice; keep one")
    tag = TEXT.read(data.get("project_tag", "project:"), "project_tag")
    index = _name(data.get("index", DEFAULT), "index")
    cat = Catalogue(tuple(backends), tuple(projects), tag, index, True, source)
    cat.get(index)  # an index on an unknown backend is refused here
    return cat


def _entries(data: dict, key: str, source: str) -> list[dict]:
    items = data.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ConfigError(f"{source}: {key} must be a list of mappings (doc/backends.md)")
    return items


def load(cfg: Config) -> Catalogue:
    """The catalogue `cfg.catalogue` names, or only the default backend when there is no such file."""
    path = cfg.catalogue
    if not os.path.lexists(path):
        return Catalogue.of(cfg)
    return parse(read_yaml(path, "backend catalogue"), cfg, path)


def dump(cat: Catalogue) -> str:
    """The file's YAML (parse reads it back): the implicit default backend is not written."""
    import yaml

    data: dict[str, Any] = {"backends": [_plain(b) for b in cat.backends if not implicit(b)]}
    if cat.projects:
        data["projects"] = [_plain(p) for p in cat.projects]
    if cat.project_tag != "project:":
        data["project_tag"] = cat.project_tag
    if cat.index != DEFAULT:
        data["index"] = cat.index
    return yaml.safe_dump(data, sort_keys=False)


def implicit(b: Backend) -> bool:
    """The default backend as a file without one gets it (ceph.yaml's pool, no limits)."""
    return b == Backend(name=DEFAULT, pool=b.pool, overcommit=0.0)


def _plain(obj: Any) -> dict[str, Any]:
    """Only the keys that differ from their defaults, tags as a list."""
    full = as_data(obj)
    empty = as_data(type(obj)(**{f: getattr(obj, f) for f in ("name", "pool") if hasattr(obj, f)}))
    out = {k: v for k, v in full.items() if k in ("name", "pool") or v != empty.get(k)}
    if "tags" in out:
        out["tags"] = list(out["tags"])
    return out
