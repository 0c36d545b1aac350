"""Shared fixtures: small configurations and the path of the shared test data."""

from pathlib import Path

import pytest

# Tests (never the package) read the UCI Census-Income test split that CI provides beside the repo.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def census_dir() -> Path:
    if not (SHARED_DATA / "census-income").is_dir():
        pytest.skip(f"shared census data not found at {SHARED_DATA}")
    return SHARED_DATA
