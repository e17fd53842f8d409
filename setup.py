"""Build hook for the one optional C extension; everything else is in pyproject.toml.

The extension (curate/stages/ingest/_watlinks.c) only speeds up reading WAT files: where it
cannot be compiled, the install goes on without it and ingest reads WAT JSON with Arrow alone.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "curate.stages.ingest._watlinks",
            ["curate/stages/ingest/_watlinks.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
