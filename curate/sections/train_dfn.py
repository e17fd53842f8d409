"""The `train_dfn:` section of a pipeline YAML. train_dfn: the DFN a later clip scorer loads."""

from __future__ import annotations

from pydantic import Field

from curate.sections.base import Section


class TrainDfnConfig(Section):
    """A DFN trained before `score` (docs/dfn.md); `curate run` resumes it and skips it once trained."""

    config: str = Field(..., description="path of a train-dfn YAML (docs/dfn.md); its `output_dir/model` is "
                        "the DFN")
