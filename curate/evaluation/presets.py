"""Training presets of `curate eval`: one fixed model and compute budget per scale.

Every arm of an evaluation trains with the same preset, so arms differ only in their samples.
`datacomp_small` and `datacomp_medium` are DataComp's scales as its code sets them
(mlfoundations/datacomp scale_configs.py and train.py: ViT-B-32, global batch 4096, lr 5e-4,
500 warmup steps, 12.8M / 128M samples seen; the rest are open_clip_train's defaults that
DataComp does not override: AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.2, cosine decay).
`tiny` is curate's own: a model and budget a 2-core machine trains in seconds, used by the tests
and the demo.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="open_clip architecture trained from scratch")
    samples_seen: int = Field(gt=0, description="training samples seen per run (steps = samples_seen // batch)")
    batch_size: int = Field(gt=1, description="global batch")
    lr: float = Field(gt=0)
    warmup_steps: int = Field(ge=0)
    weight_decay: float = Field(ge=0)
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    precision: str = "auto"
    use_gpu: bool = False
    cpu_threads: int | None = None
    loader_workers: int = 2
    source: str = ""


PRESETS: dict[str, Preset] = {
    "tiny": Preset(model="curate-tiny", samples_seen=8192, batch_size=64, lr=2e-3, warmup_steps=10,
                   weight_decay=0.1, cpu_threads=2, loader_workers=0,
                   source="curate: a CPU budget for tests and the demo"),
    "datacomp_small": Preset(model="ViT-B-32", samples_seen=12_800_000, batch_size=4096, lr=5e-4,
                             warmup_steps=500, weight_decay=0.2, use_gpu=True, loader_workers=8,
                             source="DataComp scale_configs.py 'small' (+ open_clip_train defaults)"),
    "datacomp_medium": Preset(model="ViT-B-32", samples_seen=128_000_000, batch_size=4096, lr=5e-4,
                              warmup_steps=500, weight_decay=0.2, use_gpu=True, loader_workers=8,
                              source="DataComp scale_configs.py 'medium' (+ open_clip_train defaults)"),
}
