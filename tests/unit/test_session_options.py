"""The Session's librados options: the configured timeouts and the keyring path reach librados as set.

Checked on a real (unconnected) librados handle: its conf_get answers what
librados will use, so a regression to librados' defaults shows here without
a cluster, and the slow-tier timing tests only confirm it.
"""

import pytest

from ganeti_ceph.config import Config, Timeouts
from ganeti_ceph.errors import ConfigError, GanetiCephError
from ganeti_ceph.rbd import mappers
from ganeti_ceph.session import Session, rados_options

KEY = "AQBzZ2ZmAAAAABAAr0d1ZnF1a2VrZXlrZXlrZXlrZQ=="


def config(tmp_path, **timeouts: float) -> Config:
    conf = tmp_path / "ceph.conf"
    conf.write_text("[global]\n\tfsid = 5b7f3c1e-0000-4000-8000-000000000001\n\tmon_host = v1:127.0.0.1:1\n")
    keyring = tmp_path / "ceph.client.ganeti.keyring"
    keyring.write_text(f"[client.ganeti]\n\tkey = {KEY}\n")
    keyring.chmod(0o600)
    return Config(conf=str(conf), keyring=str(keyring), client_id="ganeti", timeouts=Timeouts(**timeouts))


@pytest.mark.parametrize(("timeouts", "want"), [
    ({"connect": 2, "mon_op": 3, "osd_op": 7}, ("2", "3", "7")),
    ({"connect": 2.5, "mon_op": 0.1, "osd_op": 30}, ("3", "1", "30")),  # Ceph takes whole seconds: rounded up
])
def test_configured_timeouts_reach_librados(tmp_path, timeouts: dict, want: tuple[str, str, str]) -> None:
    handle = Session(config(tmp_path, **timeouts)).handle()
    try:
        got = tuple(handle.conf_get(k) for k in ("client_mount_timeout", "rados_mon_op_timeout",
                                                 "rados_osd_op_timeout"))
    finally:
        handle.shutdown()
    assert got == want


def test_librados_defaults_differ_so_the_check_means_something(tmp_path) -> None:
    import rados

    handle = rados.Rados(conffile=config(tmp_path).conf)
    try:
        assert handle.conf_get("client_mount_timeout") not in ("2", "3")
    finally:
        handle.shutdown()


def test_the_key_travels_only_as_a_keyring_path(tmp_path) -> None:
    """Neither librados' options nor any mapper's argv carry the key, only the keyring's path."""
    cfg = config(tmp_path)
    opts = rados_options(cfg)
    assert opts["keyring"] == cfg.keyring and "key" not in opts and KEY not in repr(opts)
    for name, cls in mappers.MAPPERS.items():
        argv = cls(cfg).client_args()
        assert KEY not in " ".join(argv), name
        assert argv[argv.index("--keyring") + 1] == cfg.keyring, name
    handle = Session(cfg).handle()
    try:
        assert handle.conf_get("keyring") == cfg.keyring and handle.conf_get("key") == ""
    finally:
        handle.shutdown()


def test_a_bad_option_is_one_error_not_a_traceback(tmp_path) -> None:
    cfg = config(tmp_path)
    missing = Config(conf=str(tmp_path / "nope.conf"), keyring=cfg.keyring)
    with pytest.raises(GanetiCephError) as exc:
        Session(missing).handle()
    assert "\n" not in exc.value.message and not isinstance(exc.value, ConfigError)
