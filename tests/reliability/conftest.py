"""The fault suite (doc/reliability.md): scenarios on the real test beds, one ledger for all."""

from __future__ import annotations

import os

import pytest

from tests.reliability.ledger import OUT_ENV, Ledger

LEDGER = Ledger()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.ceph)


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    return LEDGER


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not LEDGER.rows:
        return
    terminalreporter.section("fault suite (doc/reliability.md)")
    terminalreporter.write_line(LEDGER.table())
    terminalreporter.write_line("totals: " + ", ".join(f"{k} {v}" for k, v in LEDGER.totals().items()))
    out = os.environ.get(OUT_ENV)
    if out:
        LEDGER.dump(out)
        terminalreporter.write_line(f"written to {out}")
