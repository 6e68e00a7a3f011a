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


def test_trusted_paths_pass() -> None:
    assert install.untrusted("/usr/lib/python3/dist-packages") is None
    for path in install.module_path():  # the checkout under test and its venv are root's
        assert install.untrusted(path) is None, path


def test_untrusted_paths_are_named(tmp_path) -> None:
    """A path others could write, anywhere up to /, is named with the reason (/tmp itself is 1777)."""
    assert "/tmp is writable by its group or by everyone" in str(install.untrusted("/tmp"))
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, 1000, 1000)
    assert install.untrusted(str(owned)) == f"{owned} is owned by uid 1000"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o775)
    assert install.untrusted(str(shared)) == f"{shared} is writable by its group or by everyone (mode 775)"
    link = tmp_path / "link"
    link.symlink_to(owned)
    assert "owned by uid 1000" in str(install.untrusted(str(link)))  # the resolved path counts too


@pytest.mark.parametrize("where", ["provider", "hooks"])
def test_refuses_a_user_writable_module_path(tmp_path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """The scripts run as root with module_path() first on sys.path: a user-writable entry is refused, and
    nothing is written."""
    evil = tmp_path / "checkout"
    evil.mkdir()
    os.chown(evil, 1000, 1000)
    monkeypatch.setattr("sys.path", [str(evil), *__import__("sys").path])
    with pytest.raises(UsageError, match=f"refusing to install: .*{evil} is owned by uid 1000") as exc:
        if where == "provider":
            install.install(str(tmp_path / "es"), "/usr/bin/python3", log_dir=str(tmp_path / "log"))
        else:
            install.install_hooks(str(tmp_path / "hooks"), "/usr/bin/python3")
    assert "\n" not in exc.value.message
    assert not (tmp_path / "es").exists() and not (tmp_path / "hooks").exists()


def test_refuses_an_untrusted_interpreter(tmp_path) -> None:
    with pytest.raises(UsageError, match="refusing to install: the scripts would run /tmp/python3"):
        install.install(str(tmp_path / "es"), "/tmp/python3", log_dir=str(tmp_path / "log"))


def test_the_verify_hook_does_nothing_once_its_package_is_gone(tmp_path) -> None:
    """`apt remove` keeps the verify hook (a conffile) and removes data_collector: the hook must exit 0,
    or every gnt-cluster verify fails until purge. The instance hooks and a broken install still fail."""
    import subprocess

    install.install_hooks(str(tmp_path), "/usr/bin/python3", path=["/usr/lib/python3/dist-packages"])
    verify = (tmp_path / "cluster-verify-post.d" / install.VERIFY_HOOK).read_text()
    assert verify == install.script_text("/usr/bin/python3", ["/usr/lib/python3/dist-packages"],
                                         "data_collector.verify_hook", "entry", missing_ok=True)

    def run(path: str, module: str, missing_ok: bool = False) -> subprocess.CompletedProcess:
        script = tmp_path / "script"
        script.write_text(install.script_text("/usr/bin/python3", [path], module, "entry", missing_ok))
        script.chmod(0o755)
        return subprocess.run([str(script)], capture_output=True, text=True, timeout=60)

    gone = str(tmp_path / "gone")
    assert run(gone, "data_collector.verify_hook", missing_ok=True).returncode == 0
    hook = run(gone, "hooks.main")
    assert hook.returncode != 0 and "No module named 'hooks'" in hook.stderr  # never passes silently
    broken = tmp_path / "broken" / "data_collector"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "verify_hook.py").write_text("import no_such_dependency_of_ours\n")
    res = run(str(tmp_path / "broken"), "data_collector.verify_hook", missing_ok=True)
    assert res.returncode != 0 and "no_such_dependency_of_ours" in res.stderr
