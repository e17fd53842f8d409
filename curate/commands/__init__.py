"""CLI subcommands: each module here registers its commands on `curate.cli.app`.

Adding a command is one new module; curate.cli imports every module in this package.
"""
