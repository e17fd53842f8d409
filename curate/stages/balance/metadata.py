"""Reading MetaCLIP metadata: a text file, a JSON list, or a folder of per-language files.

- `entries.txt`: one entry a line (blank lines are skipped and counted);
- `metadata.json`: a JSON list of strings, the layout of MetaCLIP's metadata.json;
- a folder of `<lang>.txt` / `<lang>.json` files (MetaCLIP 2): the file name is the language
  code that the `lang` column of the language scorer routes captions by.
A single file applies to every caption whatever its language (language "*").
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

import fsspec

from curate.errors import ConfigError

ALL_LANGUAGES = "*"
_SUFFIXES = (".txt", ".json")


@dataclass
class Metadata:
    entries: dict[str, list[str]]  # language -> entries, in file order
    source: str
    blank_lines_skipped: dict[str, int] = field(default_factory=dict)

    @property
    def per_language(self) -> bool:
        return ALL_LANGUAGES not in self.entries

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for lang, entries in self.entries.items():
            h.update(lang.encode() + b"\x00")
            for e in entries:
                h.update(e.encode("utf-8", "surrogatepass") + b"\x00")
            h.update(b"\x01")
        return h.hexdigest()


def _parse(raw: bytes, name: str) -> tuple[list[str], int]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: metadata is not UTF-8 ({exc})") from exc
    if name.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{exc.lineno}: metadata is not valid JSON: {exc.msg}") from exc
        if not isinstance(data, list):
            raise ConfigError(
                f"{name}: expected a JSON list of entries (MetaCLIP metadata.json), got {type(data).__name__}"
            )
        bad = next((i for i, e in enumerate(data) if not isinstance(e, str)), None)
        if bad is not None:
            raise ConfigError(f"{name}: entry {bad} is {type(data[bad]).__name__}, expected a string")
        entries = [e for e in data if e.strip()]
        return entries, len(data) - len(entries)
    lines = text.splitlines()
    entries = [line.strip() for line in lines if line.strip()]
    return entries, len(lines) - len(entries)


def load_metadata(path: str) -> Metadata:
    """Read metadata from a local path or fsspec URL; errors name the file and what was expected."""
    fs, root = fsspec.core.url_to_fs(str(path))
    if not fs.exists(root):
        raise ConfigError(f"metadata not found: {path}")
    if fs.isdir(root):
        files = sorted(p for p in fs.ls(root, detail=False) if not posixpath.basename(p).startswith("."))
        unknown = [posixpath.basename(p) for p in files if not p.endswith(_SUFFIXES)]
        if unknown:
            raise ConfigError(f"{path}: per-language metadata files must be <lang>.txt or <lang>.json; "
                              f"unexpected: {', '.join(unknown[:5])}")
        if not files:
            raise ConfigError(f"{path}: metadata folder is empty (expected <lang>.txt or <lang>.json files)")
        meta = Metadata({}, str(path))
        for p in files:
            base = posixpath.basename(p)
            lang = base.rsplit(".", 1)[0]
            if lang in meta.entries:
                raise ConfigError(f"{path}: language {lang!r} has both a .txt and a .json file")
            with fs.open(p, "rb") as fh:
                meta.entries[lang], meta.blank_lines_skipped[lang] = _parse(fh.read(), p)
        return meta
    with fs.open(root, "rb") as fh:
        entries, skipped = _parse(fh.read(), str(path))
    if not entries:
        raise ConfigError(f"{path}: metadata has no entries")
    return Metadata({ALL_LANGUAGES: entries}, str(path), {ALL_LANGUAGES: skipped})
