"""The dependency rule holds: the import contracts of pyproject.toml are kept.

Run here too (not only by make lint) so that `pytest tests/unit` shows a
broken layer at once; doc/architecture.md says what the contracts mean.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
PACKAGES = ("ganeti_ceph", "extstorage", "hooks", "gnt_storage", "data_collector")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: scripts/install-deps installs import-linter"
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_import_contracts_kept() -> None:
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert " 0 broken" in out.stdout, out.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("ganeti_ceph/naming.py", "import hooks.env", "The core"),
    ("data_collector/report.py", "import extstorage.request", "Adapters never import each other"),
    ("hooks/env.py", "from gnt_storage.deploy import local", "deployment only through its API"),
    ("gnt_storage/deploy/options.py", "import hooks.env", "Deployment imports no adapter"),
])
def test_a_violation_is_caught(tmp_path: Path, module: str, line: str, contract: str) -> None:
    """The contracts bite: each kind of forbidden import, added to a copy of the tree, breaks its contract."""
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / module, "a") as fh:
        fh.write(f"\n{line}\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0, out.stdout
    broken = out.stdout[out.stdout.index("Broken contracts"):]
    assert contract in broken, out.stdout
