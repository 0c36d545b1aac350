"""Tiny synthetic slices shared by the tuning tests."""

import textwrap

import pytest

from mtl_bench.config import RunConfig

ROWS = {"train_rows": 256, "validation_rows": 128, "test_rows": 64}


@pytest.fixture
def tiny_config():
    """``tiny_config(**overrides)``: a one-epoch synthetic configuration on 256 training rows."""

    def make(**kw) -> RunConfig:
        return RunConfig(**{"suite": "synthetic", "suite_params": dict(ROWS), "epochs": 1, "jobs": 1, **kw})

    return make


@pytest.fixture
def tiny_args() -> list[str]:
    """The same slice as command-line arguments."""
    return [arg for k, v in ROWS.items() for arg in ("--param", f"{k}={v}")]


@pytest.fixture
def write_space(tmp_path):
    """``write_space(text)``: writes a search-space TOML file and returns its path."""

    def write(text: str) -> str:
        path = tmp_path / "space.toml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return write
