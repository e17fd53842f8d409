"""CLI subcommands: each module here registers its commands on `curate.cli.app`.

Adding a command is one new module; curate.cli imports every module in this package. A stage
command takes its section's flags, `--config` and `--set` from `section_options` (options.py), so a
new config key needs only its Field (and `python -m curate.docs_config` for docs/config.md).
"""
