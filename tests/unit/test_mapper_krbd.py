"""krbd against a fake sysfs: what this kernel cannot show for real."""

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
