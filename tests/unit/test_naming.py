import pytest

from ganeti_ceph import naming
from ganeti_ceph.errors import UsageError


@pytest.mark.parametrize("name", ["rbd", "ganeti_disks", "p1"])
def test_good_pools(name: str) -> None:
    assert naming.check_pool_name(name) == name


@pytest.mark.parametrize("name", ["", "a-b", "a/b", "a b", "a" * 65, "pööl"])
def test_bad_pools(name: str) -> None:
    with pytest.raises(UsageError):
        naming.check_pool_name(name)


def test_ganeti_volume_names_are_valid_images() -> None:
    assert naming.check_image_name("3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0")
    assert naming.check_image_name("3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0.snap")


@pytest.mark.parametrize("name", ["", "UPPER", "a/b", "a@b", "-lead", "a b", "a" * 201])
def test_bad_images(name: str) -> None:
    with pytest.raises(UsageError):
        naming.check_image_name(name)


def test_client_ids() -> None:
    assert naming.check_client_id("ganeti.node-1_a")
    for bad in ("client.x:y", "", "A", "a b"):
        with pytest.raises(UsageError):
            naming.check_client_id(bad)


DOTS = [".", "..", ".hidden", "..x", "./a", "../a"]


@pytest.mark.parametrize("name", DOTS)
def test_dot_names_are_never_pools_images_or_snapshots(name: str) -> None:
    """`.`, `..` and a leading dot would be path components (rbd-fuse mounts, the mapping links under
    run_dir/dev/<fsid>/<pool>/<image>) that climb or hide: refused everywhere a name is taken."""
    for check in (naming.check_pool_name, naming.check_image_name, naming.check_snap_name,
                  naming.check_client_id):
        with pytest.raises(UsageError):
            check(name)


def test_inner_dots_stay_valid_in_images() -> None:
    assert naming.check_image_name("a.b..c") == "a.b..c"


@pytest.mark.parametrize("check", [naming.check_pool_name, naming.check_image_name, naming.check_snap_name,
                                   naming.check_client_id])
def test_a_trailing_newline_is_not_a_name(check: object) -> None:
    """`$` matches before a final newline: the patterns must match the whole name."""
    with pytest.raises(UsageError):
        check("abc\n")  # type: ignore[operator]
