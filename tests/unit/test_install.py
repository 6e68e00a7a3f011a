import os

import pytest

from extstorage import install
from extstorage.request import ACTIONS
from ganeti_ceph.errors import UsageError


def test_install_and_remove(tmp_path) -> None:
    target = install.install(str(tmp_path), "/usr/bin/python3", log_dir=str(tmp_path / "log"))
    for action in ACTIONS:
        path = os.path.join(target, action)
        assert os.path.islink(path) and os.access(path, os.X_OK)
    with open(os.path.join(target, install.SCRIPT)) as fh:
        assert fh.readline() == "#!/usr/bin/python3 -IS\n"
    assert os.path.isfile(os.path.join(target, "parameters.list"))
    assert os.path.isdir(tmp_path / "log")
    install.install(str(tmp_path), "/usr/bin/python3", log_dir=str(tmp_path / "log"))  # idempotent
    assert install.remove(str(tmp_path)) is True
    assert install.remove(str(tmp_path)) is False


def test_never_overwrites_a_foreign_provider(tmp_path) -> None:
    (tmp_path / "rbd").mkdir()
    (tmp_path / "rbd" / "create").write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not a ganeti-ceph provider"):
        install.install(str(tmp_path), "/usr/bin/python3", log_dir=str(tmp_path / "log"))
    with pytest.raises(UsageError):
        install.remove(str(tmp_path))
    assert (tmp_path / "rbd" / "create").exists()


def test_hooks_install_and_remove(tmp_path) -> None:
    links = install.install_hooks(str(tmp_path), "/usr/bin/python3")
    assert len(links) == len(install.HOOKS) + 1
    verify = (tmp_path / "cluster-verify-post.d" / install.VERIFY_HOOK).read_text()
    assert "from data_collector.verify_hook import entry" in verify
    for hpath, phase in install.HOOKS:
        link = tmp_path / f"{hpath}-{phase}.d" / install.HOOK_NAME
        assert link.is_symlink() and os.access(link, os.X_OK)
    script = (tmp_path / install.HOOK_SCRIPT).read_text()
    assert "from hooks.main import entry" in script and script.startswith("#!/usr/bin/python3 -IS\n")
    assert install.remove_hooks(str(tmp_path)) == len(install.HOOKS) + 1
    assert not (tmp_path / install.HOOK_SCRIPT).exists()
