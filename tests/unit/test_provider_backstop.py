"""execute's backstop: a librbd/librados error no handler mapped is still one line and its exit code.

The session factory raises the very exception classes librbd raises (no
cluster needed); what is tested is our mapping, not librbd.
"""

import contextlib
from collections.abc import Iterator

import pytest
import rados
import rbd

from extstorage import provider

VOL = "3c6b1f0e-8a8e-4b55-9d1c-0a2b3c4d5e6f.ext.disk0"


@pytest.mark.parametrize(("exc", "code"), [
    (rbd.ImageNotFound("[errno 2] RBD image not found (error opening image)", errno=2), 5),
    (rbd.PermissionError("[errno 13] RBD permission error", errno=13), 5),
    (rados.TimedOut("[errno 110] RADOS timed out"), 4),
])
def test_an_unmapped_ceph_error_is_one_line_with_its_code(tmp_path, capsys: pytest.CaptureFixture,
                                                         exc: Exception, code: int) -> None:
    cfg = tmp_path / "ceph.yaml"
    cfg.write_text("cluster: far\nconf: /nonexistent/ceph.conf\nkeyring: /nonexistent/k\n")

    @contextlib.contextmanager
    def sessions(_cfg: object) -> Iterator[object]:
        raise exc
        yield  # pragma: no cover

    out = provider.execute("grow", {"GANETI_CEPH_CONFIG": str(cfg), "VOL_NAME": VOL, "VOL_SIZE": "64",
                                    "VOL_NEW_SIZE": "128"}, sessions)  # type: ignore[arg-type]
    assert out.code == code, out.stderr
    assert out.stderr.startswith("rbd grow: cluster far: ") and out.stderr.count("\n") == 1, out.stderr
    assert "internal error" not in out.stderr and f"rbd/{VOL}" in out.stderr
    assert "Traceback" not in capsys.readouterr().err
