import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/ceph talks to the real cluster."""
    for item in items:
        if "/tests/ceph/" in str(item.fspath):
            item.add_marker(pytest.mark.ceph)
