"""krbd against a fake sysfs (tests/kernel maps with it for real on Debian's kernel in a VM)."""

import pytest

from ganeti_ceph.rbd.mappers.krbd import Krbd
from ganeti_ceph.rbd.mappers.table import Target
from tests.unit.test_mappers_pure import T, cfg, write


def test_krbd_checks_pool_image_and_fsid(tmp_path) -> None:
    sys_rbd = tmp_path / "bus/rbd/devices"
    for key, value in {"pool": "rbd", "name": "vol.ext.disk0", "current_snap": "-", "cluster_fsid": "f5"}.items():
        write(str(sys_rbd / "3" / key), value)
    m = Krbd(cfg(tmp_path, "krbd"), str(tmp_path / "block"), str(sys_rbd))
    assert m.is_mapping_of("/dev/rbd3", T)
    assert not m.is_mapping_of("/dev/rbd3", Target("other-fsid", "rbd", "vol.ext.disk0"))
    assert not m.is_mapping_of("/dev/rbd4", T)



def test_krbd_tells_namespaces_apart(tmp_path) -> None:
    """A namespaced backend's image (target pool "rbd/ns") is found by sysfs pool and pool_ns, and is not
    taken for the same name in the pool's default namespace, nor the other way round."""
    sys_rbd = tmp_path / "bus/rbd/devices"
    for dev, ns in (("3", "tenant"), ("4", "")):
        for key, value in {"pool": "rbd", "pool_ns": ns, "name": "vol.ext.disk0", "current_snap": "-",
                           "cluster_fsid": "f5"}.items():
            write(str(sys_rbd / dev / key), value)
    m = Krbd(cfg(tmp_path, "krbd"), str(tmp_path / "block"), str(sys_rbd))
    spaced = Target("f5", "rbd/tenant", "vol.ext.disk0")
    assert m.is_mapping_of("/dev/rbd3", spaced) and not m.is_mapping_of("/dev/rbd4", spaced)
    assert m.is_mapping_of("/dev/rbd4", T) and not m.is_mapping_of("/dev/rbd3", T)


def test_a_late_map_is_not_followed_by_a_feature_query(tmp_path, monkeypatch) -> None:
    """A map past its bound has used the attach's time: no `rbd info` with another bound after it
    (a feature refusal is prompt, never late)."""
    from ganeti_ceph import runner
    from ganeti_ceph.errors import ToolFailed

    calls: list[list[str]] = []

    def run(argv: list[str], *a: object, **k: object) -> str:
        calls.append(argv)
        raise ToolFailed("map rbd/x with krbd: rbd did not finish within 10 s", "late")

    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(Krbd, "available", classmethod(lambda cls: True))
    with pytest.raises(ToolFailed, match="did not finish"):
        Krbd(cfg(tmp_path, "krbd")).map_device(Target("f5", "rbd", "x"))
    assert [c[1] for c in calls] == ["device"]
