"""One module per pipeline YAML section: the pydantic model each stage declares as its config.

curate.config assembles them into PipelineConfig; docs/config.md and each stage command's flags
are generated from these models (every key needs a Field description).
"""
