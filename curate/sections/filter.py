"""The `filter:` section of a pipeline YAML. Filter: a declarative spec → subsets/<name>/."""

from __future__ import annotations

from pydantic import Field

from curate.names import PoolName
from curate.sections.base import Section


class FilterConfig(Section):
    """A filter spec applied to the pool (docs/filter.md)."""

    spec: str | None = Field(None, description="path of the filter spec YAML (docs/spec-reference.md)")
    name: PoolName | None = Field(None, description="subset name: outputs go to `subsets/<name>/`; default: "
                                  "the spec's `name`")
    approximate: bool = Field(
        False, description="bounded-memory histogram cut-offs for `top_fraction`/`bottom_fraction` instead of "
        "exact ones (docs/filter.md)"
    )
