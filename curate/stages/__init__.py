"""Pipeline stages: one package per stage, each exposing `run(pool, config, ...)`."""
