from gnt_storage.deploy.daemons import Daemon, is_ours


def test_is_ours_checks_binary_conf_and_id() -> None:
    d = Daemon("osd", "1")
    assert is_ours(["/usr/bin/ceph-osd", "-c", "/d/ceph.conf", "-i", "1"], d, "/d/ceph.conf")
    assert not is_ours(["/usr/bin/ceph-osd", "-c", "/other/ceph.conf", "-i", "1"], d, "/d/ceph.conf")
    assert not is_ours(["/usr/bin/ceph-osd", "-c", "/d/ceph.conf", "-i", "2"], d, "/d/ceph.conf")
    assert not is_ours(["/usr/bin/ceph-mon", "-c", "/d/ceph.conf", "-i", "1"], d, "/d/ceph.conf")
    assert not is_ours([], d, "/d/ceph.conf")


def test_daemon_argv() -> None:
    assert Daemon("mon", "a").argv("/c") == ["ceph-mon", "-c", "/c", "-i", "a"]
