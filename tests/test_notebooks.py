"""Every notebook runs headless, with small parameters, in a kernel on this interpreter, without error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# As in conftest.SHARED_DATA (conftest is not importable under --import-mode=importlib).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_RUN = dict(suite_params={"correlation": [1.0, 0.0]}, archs=["mmoe"], seeds=2, epochs=2,
                 max_train_rows=512, max_eval_rows=256, probe_every=4, in_process=True)


def _parameters(name: str, tmp_path: Path) -> dict:
    if name == "01_quickstart.ipynb":
        return dict(SMALL_RUN, out_dir=str(tmp_path / "run"), suite_params={"correlation": [0.5]})
    if name == "02_conflict_vs_retention.ipynb":
        census = str(SHARED_DATA) if (SHARED_DATA / "census-income").is_dir() else None
        return dict(SMALL_RUN, out_root=str(tmp_path / "runs"), census_data_dir=census, census_epochs=1, census_seeds=1,
                    census_max_train_rows=1024, census_max_eval_rows=512, n_boot=200, figures_dir=str(tmp_path / "figures"))
    if name == "03_tuning.ipynb":
        return dict(out_dir=str(tmp_path / "tune"), arms=["single", "mmoe"], n_trials=2, epochs=1,
                    max_train_rows=512, max_eval_rows=256, retrain_seeds=2, jobs=1)
    raise AssertionError(f"no test parameters for {name}; add them here")


def _inject(nb, parameters: dict) -> None:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "each notebook has exactly one cell tagged 'parameters'"
    names = set()
    for line in cells[0].source.splitlines():
        if "=" in line and not line.startswith((" ", "#")):
            names.add(line.split("=", 1)[0].strip())
    unknown = set(parameters) - names
    assert not unknown, f"parameters {unknown} are not in the notebook's parameters cell"
    cells[0].source += "\n\n# injected by tests/test_notebooks.py\n" + "\n".join(
        f"{k} = {v!r}" for k, v in parameters.items())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs(name: str, tmp_path: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    _inject(nb, _parameters(name, tmp_path))
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.prefix)"))
    client = nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",  # per cell, on a loaded machine
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.prefix, "the kernel must run on the test's interpreter"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    if name == "02_conflict_vs_retention.ipynb":
        assert any((tmp_path / "figures").glob("synthetic_conflict_vs_retention.png"))
