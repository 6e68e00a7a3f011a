"""What every mapper shares (links, locks, the registry) against a fake run dir and sysfs.

Each mapper's own logic is tested in test_mapper_<module>.py, which reuses `cfg` and `write`.
"""

import dataclasses
import importlib
import os
import pkgutil
import threading
import time

import pytest

from ganeti_ceph import config
from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.errors import Busy, ConfigError
from ganeti_ceph.rbd import mappers
from ganeti_ceph.rbd.mappers import Mapper, Target, table
from ganeti_ceph.rbd.mappers.fuse_loop import FuseLoop
from ganeti_ceph.rbd.mappers.krbd import Krbd

T = Target("f5", "rbd", "vol.ext.disk0")


def cfg(tmp_path, mapper: str) -> Config:
    return Config(conf="/c/ceph.conf", keyring="/c/k", client_id="ganeti", mapper=mapper, run_dir=str(tmp_path / "run"))


def write(path, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text + "\n")


def test_link_includes_fsid_pool_image(tmp_path) -> None:
    run = str(tmp_path / "run")
    assert table.link(run, T) == str(tmp_path / "run/dev/f5/rbd/vol.ext.disk0")
    assert table.link(run, T) != table.link(run, Target("f6", "rbd", "vol.ext.disk0"))
    assert table.device(run, T) is None and Krbd(cfg(tmp_path, "krbd")).find(T) is None


def test_links_of_two_images_race_without_loss(tmp_path) -> None:
    """Two images of one pool published and dropped at once from real threads,
    as two Ganeti jobs' attach and detach do (each holds only its own image's
    lock): every publish must leave its link in place, whatever the other
    image's unpublish does to the shared <fsid>/<pool> directories."""
    run = str(tmp_path / "run")
    targets = [Target("f5", "rbd", f"vol{i}.ext.disk0") for i in range(2)]
    failures: list[str] = []
    start = threading.Barrier(len(targets))

    def churn(t: Target) -> None:
        start.wait()
        for _ in range(3000):
            try:
                table.publish(run, t, "/dev/loop3")
            except OSError as exc:
                failures.append(f"publish {t.image}: {exc}")
                return
            if table.device(run, t) != "/dev/loop3":
                failures.append(f"{t.image}: link lost")
                return
            table.unpublish(run, t)

    threads = [threading.Thread(target=churn, args=(t,)) for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not failures, failures[0]
    assert not any(th.is_alive() for th in threads)


def test_lock_wait_is_bounded(tmp_path) -> None:
    """A map or unmap of an image whose lock another call holds gives up after timeouts.osd_op,
    in one line, instead of waiting for ever; the image's lock is free again once the holder ends."""
    bound = 0.5
    m = FuseLoop(dataclasses.replace(cfg(tmp_path, "fuse-loop"), timeouts=Timeouts(osd_op=bound)))
    with m.locked(T):
        started = time.monotonic()
        with pytest.raises(Busy, match=f"another map or unmap of rbd/{T.image}") as err, m.locked(T):
            pass
        assert time.monotonic() - started < bound + 2  # ended within its configured bound
        assert "\n" not in err.value.message
    with m.locked(T):
        pass


def test_the_table_lists_links_of_one_cluster_only(tmp_path) -> None:
    """The links of one fsid, by pool and image; a link half-written (.tmp) or another cluster's is no mapping."""
    run = str(tmp_path / "run")
    table.publish(run, T, "/dev/loop3")
    table.publish(run, Target("f5", "other", "b"), "/dev/loop4")
    table.publish(run, Target("f6", "rbd", "c"), "/dev/loop5")
    os.symlink("/dev/loop6", table.link(run, T) + ".tmp")
    assert table.mapped(run, "f5") == [(Target("f5", "other", "b"), "/dev/loop4"), (T, "/dev/loop3")]
    assert table.mapped(run, None) == [] and table.mapped(str(tmp_path / "absent"), "f5") == []
    assert table.device(run, T) == "/dev/loop3"
    table.unpublish(run, T)
    assert table.device(run, T) is None and os.path.isdir(os.path.dirname(table.link(run, T)))


def test_the_registry_holds_every_mapper_module() -> None:
    """Each module of the package but the shared ones is one mapper, and the registry has it, in preference order:
    a new mapper is its module (and its test) and nothing else."""
    modules = [m.name for m in pkgutil.iter_modules(mappers.__path__) if m.name not in mappers.SHARED]
    defined = []
    for name in modules:
        module = importlib.import_module(f"ganeti_ceph.rbd.mappers.{name}")
        own = [c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, Mapper) and c.__module__ == module.__name__]
        assert len(own) == 1, name
        defined += own
    assert sorted(mappers.MAPPERS.values(), key=lambda c: c.__name__) == sorted(defined, key=lambda c: c.__name__)
    assert mappers.names() == ("krbd", "rbd-nbd", "fuse-loop")
    assert [mappers.get(n).name for n in mappers.names()] == list(mappers.names())
    assert all(type(mappers.for_config(cfg_of(n))).name == n for n in mappers.names())


def cfg_of(mapper: str) -> Config:
    return Config(conf="/c/ceph.conf", keyring="/c/k", mapper=mapper)


def test_the_config_takes_exactly_the_registrys_names() -> None:
    for name in mappers.names():
        assert config.parse({"conf": "/c", "keyring": "/k", "mapper": name}).mapper == name
    with pytest.raises(ConfigError, match=f"mapper must be one of {', '.join(mappers.names())}, not 'nope'"):
        config.parse({"conf": "/c", "keyring": "/k", "mapper": "nope"})


def test_detect_takes_the_most_preferred_available_mapper(monkeypatch: pytest.MonkeyPatch) -> None:
    have: set[str] = set()
    for cls in mappers.MAPPERS.values():
        monkeypatch.setattr(cls, "available", classmethod(lambda c: c.name in have))
    assert mappers.detect() == "fuse-loop"  # the last resort, whatever the host lacks
    have.update(("rbd-nbd", "fuse-loop"))
    assert mappers.detect() == "rbd-nbd"
    have.add("krbd")
    assert mappers.detect() == "krbd"
