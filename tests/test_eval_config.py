"""The eval YAML: presets as DataComp's code sets them, overrides, reserved arm names, the GPU rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from curate.errors import ConfigError
from curate.evaluation.config import EvalConfig, load_eval_config
from curate.evaluation.presets import PRESETS
from curate.evaluation.train import train_config

BASE = {"pool": "p", "arms": [{"subset": "s"}], "evalsets": ["e"]}


def test_datacomp_presets_are_datacomps_numbers() -> None:
    # mlfoundations/datacomp scale_configs.py: small and medium (ViT-B-32, batch 4096, lr 5e-4, warmup 500).
    for name, samples in (("datacomp_small", 12_800_000), ("datacomp_medium", 128_000_000)):
        p = PRESETS[name]
        assert (p.model, p.batch_size, p.lr, p.warmup_steps, p.samples_seen) == ("ViT-B-32", 4096, 5e-4, 500, samples)
        assert (p.beta1, p.beta2, p.eps, p.weight_decay) == (0.9, 0.98, 1e-6, 0.2)  # open_clip_train's defaults
    assert EvalConfig.model_validate({**BASE, "preset": "datacomp_small"}).steps == 3125
    assert EvalConfig.model_validate({**BASE, "preset": "datacomp_medium"}).steps == 31250


def test_overrides_apply_to_every_arm_and_are_checked() -> None:
    cfg = EvalConfig.model_validate({**BASE, "train": {"samples_seen": 1000, "batch_size": 100}})
    assert cfg.steps == 10 and cfg.resolved_preset().lr == PRESETS["tiny"].lr
    with pytest.raises(ValueError, match="less than one batch"):
        EvalConfig.model_validate({**BASE, "train": {"samples_seen": 10, "batch_size": 100}}).resolved_preset()


@pytest.mark.parametrize("name", ["pool", "random-x"])
def test_control_names_are_reserved(name: str) -> None:
    with pytest.raises(ValidationError, match="reserved"):
        EvalConfig.model_validate({**BASE, "arms": [{"subset": "s", "name": name}]})


def test_gpu_follows_the_preset_unless_scaling_says() -> None:
    small = EvalConfig.model_validate({**BASE, "preset": "datacomp_small"})
    assert train_config(small.resolved_preset(), "d.parquet", "out", 0, small.scaling).scaling.use_gpu
    cpu = EvalConfig.model_validate({**BASE, "preset": "datacomp_small", "scaling": {"use_gpu": False}})
    assert not train_config(cpu.resolved_preset(), "d.parquet", "out", 0, cpu.scaling).scaling.use_gpu
    tiny = EvalConfig.model_validate(BASE)
    cfg = train_config(tiny.resolved_preset(), "d.parquet", "out", 2, tiny.scaling)
    assert not cfg.scaling.use_gpu and cfg.train.seed == 2 and cfg.model.from_scratch
    assert cfg.train.steps * cfg.train.batch_size == PRESETS["tiny"].samples_seen


@pytest.mark.fault("eval", "unknown key in the eval YAML", "one-line error naming file, line and key")
def test_unknown_yaml_key_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("pool: p\narms: [{subset: s}]\nevalsets: [e]\nseed: 3\n")
    with pytest.raises(ConfigError, match=r"eval.yaml:4.*seed"):
        load_eval_config(path)
