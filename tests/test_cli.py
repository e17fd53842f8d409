from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from curate.cli import app

runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run",):
        assert command in result.output


def test_every_command_has_help_text():
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert command.help and len(command.help) > 20, f"`curate {name}` has no help text"
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


def test_bad_config_is_one_line_error_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pool: /tmp/x\ndownload:\n  image_size: huge\n")
    proc = subprocess.run([sys.executable, "-m", "curate", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.yaml:3: download.image_size" in lines[0]


@pytest.mark.parametrize("args", [
    ["export", "--subset", "x", "--name", "../../X"],
    ["filter", "--spec", "s.yaml", "--name", "../../X"],
    ["eval-dfn", "--model", "m", "--subset", "../../X"],
], ids=["export --name", "filter --name", "eval-dfn --subset"])
@pytest.mark.fault("cli", "a name option that leaves the pool (--name ../../X, --subset ../../X)",
                   "one line naming the option, exit 2; nothing is written")
def test_name_options_that_leave_the_pool_are_one_line_errors(tmp_path, args):
    pool = tmp_path / "pool"
    proc = subprocess.run([sys.executable, "-m", "curate", *args, "--pool", str(pool)], capture_output=True,
                          text=True, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "options: " in lines[0] and ": not a valid name (one path segment" in lines[0]
    assert "'../../X'" in lines[0] and not (tmp_path / "X").exists() and not pool.exists()


def test_unknown_stage_in_from_is_an_error(tmp_path):
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"pool: {tmp_path / 'pool'}\n")
    proc = subprocess.run([sys.executable, "-m", "curate", "run", str(cfg), "--from", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown stage 'nope'" in proc.stderr


@pytest.mark.parametrize("args", [["--version"]])
def test_version(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "curate" in result.output
