import errno

import pytest

from ganeti_ceph import errors


def test_messages_are_one_line() -> None:
    assert errors.GanetiCephError("a\n  b\tc").message == "a b c"


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (errno.ENOENT, errors.NotFound),
        (errno.EBUSY, errors.Busy),
        (errno.ETIMEDOUT, errors.CephUnavailable),
        (errno.EACCES, errors.CephError),
        (errno.EINVAL, errors.CephError),
    ],
)
def test_errno_mapping(code: int, cls: type) -> None:
    err = errors.from_errno("c1", "op", code, "detail")
    assert type(err) is cls
    assert "c1" in err.message


def test_ceph_errors_maps_rados_classes() -> None:
    class Fake(Exception):
        errno = errno.ENOENT

    Fake.__module__ = "rados"
    with pytest.raises(errors.NotFound, match="cluster c: open failed"), errors.ceph_errors("c", "open"):
        raise Fake("no such thing")


def test_ceph_errors_leaves_other_exceptions() -> None:
    with pytest.raises(ValueError), errors.ceph_errors("c", "x"):
        raise ValueError("bug")


def test_run_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    def boom() -> int:
        raise errors.UsageError("bad size 'x'; use a number of MiB")

    with pytest.raises(SystemExit) as exc:
        errors.run_main("prog", boom)
    assert exc.value.code == errors.UsageError.exit_code
    assert capsys.readouterr().err == "prog: bad size 'x'; use a number of MiB\n"


def test_exit_codes_are_distinct() -> None:
    """An SSH failure is not "cluster unreachable": scripts tell them apart by code."""
    classes = (errors.GanetiCephError, errors.UsageError, errors.ConfigError, errors.CephUnavailable,
               errors.CephError, errors.SshError)
    assert len({c.exit_code for c in classes}) == len(classes)
    assert errors.ToolFailed("x").exit_code == 1 and errors.SshError.exit_code == 6
