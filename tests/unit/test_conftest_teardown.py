"""tests/conftest.py's cluster teardown must not hide the failure that caused it."""

import subprocess

import pytest

from tests.conftest import report_down


def test_failed_down_after_failed_tests_warns_and_shows_them_first() -> None:
    """tests/conftest.py's teardown: after failed tests a failing `local-cluster down` is a warning, so the
    run ends with those failures rather than a teardown traceback; after a green run it fails the run."""
    res = subprocess.CompletedProcess(["gnt-storage"], 1, "", "rbd-fuse still mounted")
    with pytest.warns(UserWarning, match=r"after 2 failed test\(s\)"):
        report_down(res, 2)
    with pytest.raises(pytest.fail.Exception, match="rbd-fuse still mounted"):
        report_down(res, 0)
    report_down(subprocess.CompletedProcess(["gnt-storage"], 0, "", ""), 0)
