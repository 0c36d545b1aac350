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
