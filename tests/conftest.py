"""Session-wide hooks. Fixtures live beside the tests that use them (tests/integration)."""

from __future__ import annotations

from tests.integration import backends


def pytest_report_header() -> str:
    # Here, not in tests/integration/conftest.py: pytest prints its header before it loads
    # conftest files below the directories it was given.
    return backends.describe()
