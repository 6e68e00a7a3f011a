"""Every installed command answers bad arguments with one line and exit 2 (review I, R13)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BIN = os.path.dirname(sys.executable)


@pytest.mark.parametrize("argv", [["ganeti-ceph-agent", "bogus"], ["ganeti-ceph-setup"],
                                  ["ganeti-ceph-setup", "install", "--nope"], ["gnt-storage", "local-cluster", "x"]])
def test_bad_arguments_are_one_line(argv: list[str]) -> None:
    res = subprocess.run([os.path.join(BIN, argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, check=False)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and not res.stdout
