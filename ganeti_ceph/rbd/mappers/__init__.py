"""Kernelspace access: map an RBD image to a local block device, and back.

The mappers behind one interface (as Ganeti's lib/storage puts device
kinds behind one class) are found here, not listed: every module of this
package but the shared ones (base, table) holds one Mapper subclass, which
carries its name, its preference and its host requirements. A new mapper
is one module (plus its test). The config's `mapper` choices are `names()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from ganeti_ceph.rbd.mappers import table
from ganeti_ceph.rbd.mappers.base import SYS_BLOCK, MapError, Mapper, module_available, read
from ganeti_ceph.rbd.mappers.table import Target

if TYPE_CHECKING:  # config reads names(): no import of it at run time
    from ganeti_ceph.config import Config

SHARED = ("base", "table")

__all__ = ["MAPPERS", "SYS_BLOCK", "MapError", "Mapper", "Target", "detect", "for_config", "get",
           "module_available", "names", "read", "table"]


def _discover() -> dict[str, type[Mapper]]:
    """name -> class of every mapper module here, most preferred first."""
    found: list[type[Mapper]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name not in SHARED:
            module = importlib.import_module(f"{__name__}.{info.name}")
            found += [c for c in vars(module).values()
                      if isinstance(c, type) and issubclass(c, Mapper) and c.__module__ == module.__name__]
    return {m.name: m for m in sorted(found, key=lambda m: m.preference)}


MAPPERS: dict[str, type[Mapper]] = _discover()


def names() -> tuple[str, ...]:
    """The values the config's `mapper` takes, most preferred first."""
    return tuple(MAPPERS)


def get(name: str) -> type[Mapper]:
    return MAPPERS[name]


def for_config(cfg: Config) -> Mapper:
    return MAPPERS[cfg.mapper](cfg)


def detect(avoid: tuple[str, ...] = ()) -> str:
    """The most preferred mapper this host can run, but none in `avoid`; the least preferred (fuse-loop) as
    the last resort."""
    return next((m.name for m in MAPPERS.values() if m.name not in avoid and m.available()), names()[-1])
