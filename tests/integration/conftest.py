"""Fixtures for the integration tests: the local IMDSv2 emulator (tests/bench/imds_emulator.py)."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The bench lives in the repository, not in an installed package; make `tests.bench` importable.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.bench.imds_emulator import ImdsEmulator  # noqa: E402


@pytest.fixture
def imds():
    """A started IMDSv2 emulator on 127.0.0.1 with a free port; stopped after the test."""
    with ImdsEmulator(host="127.0.0.1", port=0) as emulator:
        yield emulator
