import pytest

from extstorage import request
from ganeti_ceph import naming
from ganeti_ceph.errors import UsageError

VOL = "3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0"


def env(**extra: str) -> dict[str, str]:
    return {"VOL_NAME": VOL, "EXTP_PROVIDER": "rbd", "EXTP_ACCESS": "userspace", "LC_ALL": "C", **extra}


def test_create_request() -> None:
    req = request.parse("create", env(VOL_SIZE="1024", VOL_UUID="u1", VOL_CNAME="disk-a", EXTP_POOL="fast"), "rbd")
    assert (req.volume, req.pool, req.access, req.size_mib, req.uuid, req.cname) == (
        VOL, "fast", "userspace", 1024, "u1", "disk-a")


def test_defaults_pool_and_kernelspace() -> None:
    req = request.parse("attach", {"VOL_NAME": VOL}, "rbd")
    assert req.pool == "rbd" and req.access == "kernelspace"


def test_largest_size_is_accepted() -> None:
    assert request.parse("create", env(VOL_SIZE=str(2**40)), "rbd").size_mib == naming.MAX_MIB


def test_grow_open_snapshot_setinfo() -> None:
    assert request.parse("grow", env(VOL_SIZE="10", VOL_NEW_SIZE="20"), "rbd").new_size_mib == 20
    assert request.parse("open", env(VOL_OPEN_EXCLUSIVE="False"), "rbd").open_exclusive is False
    assert request.parse("open", env(VOL_OPEN_EXCLUSIVE="True"), "rbd").open_exclusive is True
    assert request.parse("snapshot", env(VOL_SNAPSHOT_NAME=VOL + ".snap"), "rbd").snapshot_name == VOL + ".snap"
    assert request.parse("setinfo", env(VOL_METADATA="originstname+inst1"), "rbd").metadata == "originstname+inst1"


@pytest.mark.parametrize(
    ("action", "extra", "needle"),
    [
        ("create", {"VOL_SIZE": "abc"}, "not a whole number"),
        ("create", {"VOL_SIZE": "0"}, "at least 1 MiB"),
        ("create", {}, "VOL_SIZE is not set"),
        ("create", {"VOL_SIZE": str(2**70)}, "more than the 1099511627776 MiB"),
        ("create", {"VOL_SIZE": str(2**40 + 1)}, "more than the 1099511627776 MiB"),
        ("create", {"VOL_SIZE": "1" * 41}, "not a whole number"),
        ("create", {"VOL_SIZE": "1_0"}, "not a whole number"),
        ("create", {"VOL_SIZE": " 64"}, "not a whole number"),
        ("create", {"VOL_SIZE": "+64"}, "not a whole number"),
        ("create", {"VOL_SIZE": "\u0666\u0664"}, "not a whole number"),
        ("grow", {"VOL_SIZE": "64", "VOL_NEW_SIZE": str(2**70)}, "VOL_NEW_SIZE=1180591620717411303424 is more"),
        ("create", {"VOL_SIZE": "1", "EXTP_BOGUS": "1"}, "unknown disk parameter(s) bogus"),
        ("attach", {"EXTP_ACCESS": "kernel"}, "access='kernel' is not valid"),
        ("attach", {"EXTP_POOL": "a/b"}, "invalid pool name"),
        ("attach", {"EXTP_DATA_POOL": "a b"}, "invalid pool name"),
        ("attach", {"VOL_NAME": "Bad/Name"}, "invalid image name"),
        ("attach", {"VOL_NAME": ""}, "VOL_NAME is not set"),
        ("open", {"VOL_OPEN_EXCLUSIVE": "yes"}, "expected True or False"),
        ("snapshot", {}, "VOL_SNAPSHOT_NAME is not set"),
        ("frobnicate", {}, "unknown action"),
    ],
)
def test_bad_requests(action: str, extra: dict[str, str], needle: str) -> None:
    with pytest.raises(UsageError) as exc:
        request.parse(action, env(**extra), "rbd")
    assert needle in exc.value.message


def test_parameters_list_names_every_parameter() -> None:
    text = request.parameters_list()
    assert [line.split()[0] for line in text.splitlines()] == list(request.PARAMETERS)
