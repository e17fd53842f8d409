"""The `stats:` section of a pipeline YAML. Stats: reports/stats.json and reports/index.html."""

from __future__ import annotations

from pydantic import Field

from curate.sections.base import Section


class StatsConfig(Section):
    """The pool report, reports/stats.json and reports/index.html (docs/stats.md)."""

    histogram_bins: int = Field(40, ge=2, le=1000, description="bins per score histogram")
    max_rows: int = Field(2_000_000, ge=1000, description="beyond this many successful samples, histograms use a "
                          "seeded uniform row sample (counts in the funnel stay exact)")
    grid_samples: int = Field(8, ge=1, le=64, description="images shown on each side of every threshold cut")
    thumbnail_size: int = Field(96, ge=16, le=512, description="longest side of grid thumbnails, pixels")
    top_errors: int = Field(15, ge=1, description="download error messages listed (the rest summed as \"(other)\")")
    seed: int = Field(0, description="seed of the row sample")
