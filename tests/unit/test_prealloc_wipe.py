"""prealloc_wipe: where the setting is read from, and that asking a confd that does not answer ends within its
bound with "cannot tell" and leaves nothing behind (sys.path, stderr). The verdict from confd's replies is in
test_ganeti_reader.py; the answering confd is tested on the real cluster: tests/ganeti/test_prealloc_confd.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ganeti_ceph.errors import UsageError
from ganeti_ceph.ganeti import ssconf
from ganeti_ceph.rbd import prealloc_wipe as pw


def _node(tmp_path: Path, peers: str = "127.0.0.1\n", key: bool = True) -> str:
    """A non-candidate node's /var/lib/ganeti: ssconf, hmac.key, no config.data."""
    (tmp_path / "ssconf_cluster_name").write_text("cluster.example\n")
    (tmp_path / "ssconf_master_candidates_ips").write_text(peers)
    if key:
        (tmp_path / "hmac.key").write_text("0123456789abcdef0123456789abcdef01234567\n")
    return str(tmp_path)


def test_config_data_wins_over_confd(tmp_path: Path) -> None:
    lib = _node(tmp_path)
    for value in (False, True):
        (tmp_path / "config.data").write_text(json.dumps({"cluster": {"prealloc_wipe_disks": value}}))
        assert pw.wipes_new_disks(lib) is value


@pytest.mark.parametrize(("peers", "key"), [("", True), ("127.0.0.1\n", False),
                                            ("127.0.0.1\n::1\n", True),  # mixed families: Ganeti's client refuses
                                            ("not-an-ip\n", True)])
def test_no_way_to_ask_confd_is_cannot_tell(tmp_path: Path, peers: str, key: bool) -> None:
    lib = _node(tmp_path, peers, key)
    assert pw.wipes_new_disks(lib) is None
    with pytest.raises(UsageError, match="cannot tell whether Ganeti's prealloc_wipe_disks") as exc:
        pw.refuse_if_wiped("this clone of rbd/tpl", lib)
    assert "\n" not in exc.value.message and "ganeti-confd" in exc.value.message


def test_a_confd_that_does_not_answer_is_cannot_tell_within_the_bound(tmp_path: Path) -> None:
    """Nothing listens on 127.0.0.1's confd port here: no answer, the wait ends at the bound."""
    lib, bound = _node(tmp_path), 0.5
    started = time.monotonic()
    assert pw.ask_confd(lib, bound) is None
    assert time.monotonic() - started < bound + 1.0  # the bound, plus what one select may overrun


def test_asking_leaves_no_trace_in_the_process(tmp_path: Path) -> None:
    """Ganeti's tree is on sys.path only while its client is imported; its import warnings (asyncore) and its
    socket stay out of the caller's stderr and asyncore's map. A fresh interpreter, so the import really runs."""
    lib = _node(tmp_path)
    code = ("import sys; before = list(sys.path); from ganeti_ceph.rbd import prealloc_wipe as pw; "
            f"r = pw.ask_confd({lib!r}, 0.3); assert 'ganeti.confd.client' in sys.modules; "
            "import asyncore; print(r, sys.path == before, asyncore.socket_map)")  # asyncore: imported by Ganeti
    res = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(pw.__file__).parents[2]), check=False)
    assert (res.returncode, res.stdout, res.stderr) == (0, "None True {}\n", "")


def test_a_ganeti_keeping_its_state_elsewhere_is_found_and_its_setting_refuses(tmp_path) -> None:
    """Review I, R3: no state at /var/lib/ganeti is not "no Ganeti cluster" when the installed Ganeti
    (a source build, say) keeps it under another localstatedir: that config.data decides."""
    tree, var = tmp_path / "share" / "ganeti" / "default", tmp_path / "usr-local-var"
    (tree / "ganeti").mkdir(parents=True)
    (tree / "ganeti" / "_constants.py").write_text(f'LOCALSTATEDIR = "{var}"\n')
    state = var / "lib" / "ganeti"
    state.mkdir(parents=True)
    (state / "ssconf_cluster_name").write_text("c1\n")
    (state / "config.data").write_text(json.dumps({"cluster": {"prealloc_wipe_disks": True}}))
    usual = str(tmp_path / "var-lib-ganeti")  # nothing at the usual place
    assert ssconf.state_dirs(usual, [str(tree)]) == [usual, str(state)]
    assert pw.wipes_new_disks(usual, [str(tree)]) is True
    with pytest.raises(UsageError):
        pw.refuse_if_wiped("the adopted image rbd/old", usual, [str(tree)])
    assert pw.wipes_new_disks(usual, []) is False  # no Ganeti installed at all: nothing can wipe
