"""The dependency rule holds: the import contracts of pyproject.toml are kept.

Run here too (not only by make lint) so that `pytest tests/unit` shows a
broken layer at once; doc/architecture.md says what the contracts mean.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_kept() -> None:
    assert LINT_IMPORTS.exists(), f"{LINT_IMPORTS} missing: scripts/install-deps installs import-linter"
    out = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert " 0 broken" in report, report

