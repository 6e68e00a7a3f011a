"""The catalogue of backends: which Ceph cluster holds a pool.

Today there is exactly one backend, the cluster a Config describes, and it
holds every pool; a volume that names no pool lives in the config's `pool`.
The volume service asks here rather than reading the Config itself, so that
issue 14 (several backends with placement) changes this module, not every
use case.
"""

from __future__ import annotations

from dataclasses import dataclass

from ganeti_ceph.config import Config


@dataclass(frozen=True)
class Backend:
    """One Ceph cluster as Ganeti's client reaches it."""

    cluster: str  # the name errors and notes use
    conf: str  # its ceph.conf
    default_pool: str


@dataclass(frozen=True)
class Catalogue:
    """The backends a Config describes: one."""

    backend: Backend

    @classmethod
    def of(cls, cfg: Config) -> Catalogue:
        return cls(Backend(cfg.cluster, cfg.conf, cfg.pool))

    def pool(self, pool: str) -> str:
        """The pool a volume lives in: the one it names, else (empty) the default."""
        return pool or self.backend.default_pool

    def backend_of(self, pool: str) -> Backend:
        """The backend holding `pool`: today the one backend holds them all."""
        return self.backend
