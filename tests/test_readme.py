"""The README's code must run as printed."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_probe_example_runs_on_a_plain_keras_model(tmp_path):
    text = README.read_text()
    block = re.search(r"<!-- probe-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(block)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if "cosine" in line or "affinity" in line]
    assert len(lines) == 4


def test_table_toml_example_loads(tmp_path):
    """The README's TOML example, every key of it, on a CSV with the columns it names."""
    from mtl_bench.tasks import table

    text = README.read_text()
    block = re.search(r"```toml\n(\[data\].*?)```", text, re.S).group(1)
    (tmp_path / "logs.toml").write_text(block)
    n = 400
    rows = ["price,age,country,device,clicked,dwell_seconds"]
    rows += [f"{i % 7}.5,{20 + i % 50},{'abc'[i % 3]},{'xy'[i % 2]},{'yes' if i % 3 == 0 else 'no'},{i % 11}"
             for i in range(n)]
    (tmp_path / "clicks.csv").write_text("\n".join(rows) + "\n")
    data = table.load(table=str(tmp_path / "logs.toml"))
    assert [t.name for t in data.tasks] == ["click", "dwell"]
    assert [t.weight for t in data.tasks] == [1.0, 1.0]
    # validation = test = 0.1 of the rows
    assert (len(data.train), len(data.validation), len(data.test)) == (320, 40, 40)
    assert sorted(data.features.numeric) == ["age", "price"] and sorted(data.features.categorical) == ["country", "device"]
