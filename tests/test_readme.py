"""The README's code must run as printed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _commands() -> list[str]:
    """Every ``mtl-bench ...`` command the README shows: in shell blocks (one per line or ``&&`` part) and inline."""
    text = README.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("#")[0].split("&&"):
                if part.strip().startswith("mtl-bench "):
                    found.append(part.strip())
    found += [" ".join(m.split()) for m in re.findall(r"`(mtl-bench [^`]*)`", text)]
    return sorted(set(found))


COMMANDS = _commands()
RUN_COMMANDS = [c for c in COMMANDS if c.split()[1] == "run" and "--help" not in c]


def test_the_readme_shows_every_sub_command():
    from mtl_bench import cli

    shown = {c.split()[1] for c in COMMANDS}
    assert shown == set(cli.COMMANDS), shown ^ set(cli.COMMANDS)


@pytest.mark.parametrize("command", sorted(__import__("mtl_bench.cli").cli.COMMANDS))
def test_help_of_every_sub_command(command, capsys):
    from mtl_bench import cli

    with pytest.raises(SystemExit) as err:
        cli.main([command, "--help"])
    assert err.value.code == 0 and f"usage: mtl-bench {command}" in capsys.readouterr().out


def _write_readme_table(directory: Path) -> Path:
    """The README's TOML example as ``my_logs.toml``, beside a CSV with the columns it names."""
    block = re.search(r"```toml\n(\[data\].*?)```", README.read_text(), re.S).group(1)
    (directory / "my_logs.toml").write_text(block)
    rows = ["price,age,country,device,clicked,dwell_seconds"]
    rows += [f"{i % 7}.5,{20 + i % 50},{'abc'[i % 3]},{'xy'[i % 2]},{'yes' if i % 3 == 0 else 'no'},{i % 11}"
             for i in range(400)]
    (directory / "clicks.csv").write_text("\n".join(rows) + "\n")
    return directory / "my_logs.toml"


@pytest.mark.slow
@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_every_readme_run_command_plans(command, tmp_path, monkeypatch, capsys):
    """Each ``mtl-bench run`` command of the README, with ``--dry-run``: it validates and plans, and writes nothing."""
    import importlib.util
    import shlex

    from mtl_bench import cli

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import SHARED_DATA

    argv = shlex.split(command)[1:]
    if "<" in command or "DIR" in argv:
        pytest.skip("names a run directory of the reader's (--config and --resume are tested in tests/mtl_bench)")
    if "census-income" in argv:
        if not (SHARED_DATA / "census-income").is_dir():
            pytest.skip(f"census data not found at {SHARED_DATA}")
        argv = [a for a in argv if a not in ("--data-dir", "~/data")] + ["--data-dir", str(SHARED_DATA)]
    if any(a.endswith(".toml") and a != "my_logs.toml" for a in argv):
        pytest.skip("names a table description of the reader's (the README's own example is my_logs.toml)")
    if "--tensorboard" in argv and importlib.util.find_spec("tensorboard") is None:
        pytest.skip("the tensorboard extra is not installed")
    monkeypatch.chdir(tmp_path)
    if "my_logs.toml" in argv:
        _write_readme_table(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = cli.main([*argv, "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert re.search(r"\d+ cell\(s\) planned", captured.out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.slow
def test_bench_runs_at_a_small_size(capsys):
    """``mtl-bench bench`` (and ``make bench``) once failed after its first line with a TypeError."""
    from mtl_bench import cli

    assert cli.main(["bench", "--rows", "2000", "--epochs", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio engine / fit" in out and "one probe event" in out
