"""Options written once: stage flags come from the config models, docs/config.md is generated from them.

These tests keep the three in step: the generated docs/config.md must be the committed one, every key
must have a description (it is the flag's --help and the table's meaning), and every flag of a
command is either a key's generated flag or a command flag its docs page describes. The CLI tests
run the real commands with the stage's `run` replaced by a recorder, so they check which section a
command hands its stage, without running the stage.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer
import typer.main
from pydantic import BaseModel
from typer.testing import CliRunner

from curate.cli import app
from curate.commands.options import SECTION_COMMANDS, description, flag_kind, section_options
from curate.config import ExportConfig
from curate.docs_config import DOC, REGENERATE, render

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

# The docs page that describes each command's own flags (those that are not config keys).
PAGES = {
    "ingest": "ingest.md", "download": "download.md", "score": "score.md", "dedup": "dedup.md",
    "filter": "filter.md", "balance": "balance.md", "export": "export.md", "stats": "stats.md",
    "import": "import.md", "train-dfn": "dfn.md", "eval-dfn": "dfn.md", "run": "run.md", "eval": "eval.md",
}
SHARED = {"--help", "--pool", "-p", "--config", "-c", "--set", "--ray-address", "--rerun"}  # docs/config.md, run.md


def _models() -> list[type[BaseModel]]:
    from curate.config import DedupMethod, PipelineConfig
    from curate.docs_config import _members
    from curate.scorers.base import ScorerConfig, registry

    sections = [f.annotation for f in PipelineConfig.model_fields.values()]
    sections = [a for t in sections for a in getattr(t, "__args__", (t,)) if isinstance(a, type)
                and issubclass(a, BaseModel)]
    return [PipelineConfig, *sections, ScorerConfig, *(c.config_class for c in registry().values()),
            *_members(DedupMethod)]


def test_config_doc_is_generated_from_the_models():
    expected = render()
    assert DOC.read_text(encoding="utf-8") == expected, f"docs/config.md is stale: run `{REGENERATE}`"


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_key_has_a_description(model):
    for key in model.model_fields:
        text = description(model, key)
        assert text, f"{model.__name__}.{key} has no Field(description=…): it is its flag's --help and docs/config.md"
        # `<name>` outside a code span is an HTML tag to Markdown: it vanishes from --help and the docs.
        bare = re.sub(r"`[^`]*`", "", text)
        assert not re.search(r"<\w+>", bare), f"{model.__name__}.{key}: put {bare!r}'s <…> in backticks"


def _commands() -> dict[str, Any]:
    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


def _options(command: Any) -> list[tuple[str, ...]]:
    return [tuple([*p.opts, *p.secondary_opts]) for p in command.params if p.param_type_name == "option"]


def test_every_key_of_a_stage_section_is_a_flag_or_set_only():
    assert set(SECTION_COMMANDS) == {"ingest", "download", "score", "dedup", "filter", "balance", "export", "stats"}
    commands = _commands()
    for section, spec in SECTION_COMMANDS.items():
        names = {n for opt in _options(commands[section]) for n in opt}
        for key, info in spec.model.model_fields.items():
            if key in spec.skipped:
                continue
            if flag_kind(info) is None:
                assert key in spec.set_only, (section, key)
                continue
            flag = spec.flags[key]
            assert flag.names[0] == "--" + key.replace("_", "-"), (section, key, flag.names)
            assert set(flag.all_names) <= names, (section, key, flag.all_names)
        assert "--set" in names and "--config" in names, section


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_flag_is_a_config_key_or_a_documented_command_flag(name):
    command = _commands()[name]
    spec = SECTION_COMMANDS.get(name)
    generated = {n for flag in spec.flags.values() for n in flag.all_names} if spec else set()
    page = (REPO / "docs" / PAGES[name]).read_text(encoding="utf-8")
    for option in _options(command):
        own = [n for n in option if n not in generated and n not in SHARED and n.startswith("--")]
        if any(n in generated for n in option):
            assert not own, f"curate {name}: {option} mixes a key's flag with others"
            continue
        for flag in own:
            assert re.search(re.escape(flag) + r"(?![\w-])", page), f"curate {name} {flag}: not a config key, and " \
                f"docs/{PAGES[name]} does not describe it"


# ------------------------------------------------------------------------------- the generated flags


@pytest.fixture()
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replace each stage's run with a recorder of the section it is handed."""
    import curate.stages.balance
    import curate.stages.dedup
    import curate.stages.export
    import curate.stats

    got: dict[str, Any] = {}

    def recorder(stage: str):
        def run(pool: Any, section: Any, **kwargs: Any) -> dict:
            got[stage] = section
            return {}
        return run

    monkeypatch.setattr(curate.stages.export, "run", recorder("export"))
    monkeypatch.setattr(curate.stages.balance, "run", recorder("balance"))
    monkeypatch.setattr(curate.stages.dedup, "run", recorder("dedup"))
    monkeypatch.setattr(curate.stats, "run", recorder("stats"))
    return got


def _invoke(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)


def test_flags_override_the_config_and_set_overrides_flags(tmp_path, recorded):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pool: /unused\nexport:\n  subset: from_yaml\n  seed: 3\n  shuffle_buffer: 5\n")
    _invoke(["export", "--pool", str(tmp_path / "pool"), "--config", str(cfg), "--seed", "7",
             "--samples-per-shard", "9", "--with-images-parquet", "--set", "shuffle_buffer=11", "--set", "name=2024"])
    section = recorded["export"]
    assert (section.subset, section.seed, section.samples_per_shard, section.shuffle_buffer) == ("from_yaml", 7, 9, 11)
    assert section.with_images_parquet is True and section.name == "2024"  # a number taken as typed for a string
    _invoke(["export", "--pool", str(tmp_path / "pool"), "-c", str(cfg), "--seed", "7", "--set", "seed=8",
             "--no-images-parquet"])
    assert recorded["export"].seed == 8 and recorded["export"].with_images_parquet is False


def test_generated_flags_of_every_kind(tmp_path, recorded):
    cfg = tmp_path / "p.yaml"
    cfg.write_text("pool: /unused\nbalance:\n  metadata: m.txt\n  t: 100\n  language_map: {en: english}\n")
    _invoke(["balance", "--pool", str(tmp_path / "pool"), "--config", str(cfg), "--tail-fraction", "0.5",
             "--rule", "normalized", "--unspaced-languages", "ko", "--language-map", "de=german",
             "--case-sensitive", "--keep-unmatched"])
    section = recorded["balance"]
    assert section.t is None and section.tail_fraction == 0.5  # a flag's threshold replaces the config's
    assert section.rule == "normalized" and section.unspaced_languages[-1] == "ko" and len(
        section.unspaced_languages) == 10  # a list flag adds to the default list
    assert section.language_map == {"en": "english", "de": "german"}
    assert section.lowercase is False and section.keep_unmatched is True
    _invoke(["balance", "--pool", str(tmp_path / "pool"), "-c", str(cfg), "--set", "unspaced_languages=[ko]"])
    assert recorded["balance"].unspaced_languages == ["ko"] and recorded["balance"].t == 100
    _invoke(["stats", str(tmp_path / "pool"), "--histogram-bins", "12", "--top-errors", "3"])
    assert (recorded["stats"].histogram_bins, recorded["stats"].top_errors) == (12, 3)


def test_set_reaches_nested_keys_without_a_yaml(tmp_path, recorded):
    _invoke(["dedup", "--pool", str(tmp_path / "pool"), "--set", "methods=[{method: exact}, {method: perceptual}]",
             "--set", "methods.1.max_distance=2"])
    methods = recorded["dedup"].methods
    assert [m.method for m in methods] == ["exact", "perceptual"] and methods[1].max_distance == 2


@pytest.mark.parametrize(("args", "expected"), [
    (["export", "--set", "seedx=1"], "export options: seedx: unknown key"),
    (["export", "--set", "seed=abc"], "export options: seed: Input should be a valid integer"),
    (["export", "--set", "seed"], "--set 'seed': expected KEY=VALUE"),
    (["export", "--set", "seed=[1"], "--set seed: invalid YAML value '[1'"),
    (["export", "--set", "seed.x=1"], "--set seed.x: export.seed holds a single value"),
    (["dedup", "--set", "methods.0.eps=0.1"], "dedup.methods.0: no such list item"),
    (["balance", "--language-map", "de"], "--language-map 'de': expected KEY=VALUE"),
    (["export", "--samples-per-shard", "0"], "export options: samples_per_shard: Input should be greater than or "
                                             "equal to 1 (got 0)"),
], ids=["unknown key", "bad value", "no =", "bad YAML", "into a scalar", "no such item", "mapping", "range"])
@pytest.mark.fault("cli", "a bad --set KEY=VALUE or flag value (unknown key, wrong type, broken YAML, out of range)",
                   "one line naming the key and the problem, exit 2; nothing runs")
def test_bad_options_are_one_line_errors(tmp_path, args, expected):
    proc = subprocess.run([sys.executable, "-m", "curate", *args, "--pool", str(tmp_path / "pool")],
                          capture_output=True, text=True, cwd=tmp_path)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "pool").exists()


def test_run_and_train_dfn_take_set(tmp_path, monkeypatch: pytest.MonkeyPatch):
    import curate.commands.run
    import curate.dfn

    got: dict[str, Any] = {}
    monkeypatch.setattr(curate.commands.run, "run_pipeline", lambda cfg, **kw: got.setdefault("run", cfg))
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"pool: {tmp_path / 'pool'}\ndownload:\n  thread_count: 4\n")
    _invoke(["run", str(cfg), "--set", "download.thread_count=16", "--set", "stats={}"])
    assert got["run"].download.thread_count == 16 and got["run"].stats is not None and got["run"].export is None
    absent = runner.invoke(app, ["run", str(cfg), "--set", "export.seed=1"])
    assert absent.exit_code != 0 and "run.export is not set" in str(absent.exception)

    def train(config: Any, **kwargs: Any) -> dict:
        got["dfn"] = config
        return {"step": 1, "target_steps": 1, "counts": {}, "model_dir": "m"}

    monkeypatch.setattr(curate.dfn, "train_dfn", train)
    example = REPO / "curate" / "dfn" / "example_train.yaml"
    _invoke(["train-dfn", "--config", str(example), "--set", "train.lr=0.25", "--set", f"output_dir={tmp_path}"])
    assert got["dfn"].train.lr == 0.25 and got["dfn"].output_dir == str(tmp_path)


def test_a_flag_is_written_once_in_the_model():
    """--help shows the key's Field description and default; a key's flag may not shadow a command option."""
    help_text = runner.invoke(app, ["export", "--help"], env={"COLUMNS": "400", "NO_COLOR": "1"}).output
    assert "Samples held in a seeded shuffle buffer per task; 0: keep order. [default: 0]" in help_text
    with pytest.raises(ValueError, match=r"flag \['--seed'\] of key 'seed' is also a command option"):
        @section_options(ExportConfig, "export-clash")
        def clash(section: ExportConfig, seed: Annotated[int, typer.Option("--seed")] = 0) -> None:
            """Never registered."""
