"""The `score:` section of a pipeline YAML. Score: scorers over the download shards."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from curate.sections.base import Section


def _scorer_spec() -> Any:
    """Discriminated union (on `type`) of every registered scorer's config: clip, language, nsfw, …"""
    from typing import Union

    from curate.scorers.base import registry

    classes = tuple(cls.config_class for cls in registry().values())
    return Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007 - built from a tuple


ScorerSpec = _scorer_spec()


class ScoreConfig(Section):
    """Scores and embeddings of every downloaded sample (docs/score.md, docs/models.md)."""

    scorers: list[ScorerSpec] = Field(  # type: ignore[valid-type]
        default_factory=list, description="scorers to run, each a mapping with `type` (below); names must be unique"
    )
    max_image_pixels: int = Field(
        89_478_485, ge=1,
        description="images with more pixels (from the header) get no image scores: `too_many_pixels`")
    decode_batch_size: int = Field(256, ge=1, description="decoded samples per block coming out of a decode task")
    decode_num_cpus: float = Field(1.0, gt=0, description="CPUs per shard-decoding task")
    decode_memory_mb: int = Field(512, ge=1, description="memory reserved per shard-decoding task")
    jpeg_decode_on: Literal["tasks", "model"] = Field(
        "tasks", description="where model scorers' JPEGs are decoded: `tasks` = CPU decode tasks (PIL, draft "
        "mode); `model` = in each model actor on its device (nvJPEG on a GPU), the CPU tasks only read headers",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> ScoreConfig:
        names = [s.name for s in self.scorers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scorer names must be unique (they name scores/<name>/): {', '.join(dupes)}")
        clips = {s.name for s in self.scorers if s.type == "clip"}
        for s in self.scorers:
            ref = getattr(s, "clip", None)
            if s.type == "nsfw" and ref not in clips:
                raise ValueError(f"nsfw scorer {s.name!r}: clip: {ref!r} names no clip scorer (have: {sorted(clips)})")
        return self
