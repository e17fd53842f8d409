"""Evaluation sets on disk: webdataset shards (or the same files unpacked) plus class names and templates.

    <dir>/classnames.txt   zero-shot: line i is the name of class i (UTF-8); clip_benchmark uses this name too
    <dir>/templates.txt    zero-shot: one prompt template per line, each containing "{c}"
                           (clip_benchmark's zeroshot_classification_templates.txt is read when this is absent)
    <dir>/*.tar            webdataset shards: <key>.png|.jpg|.jpeg|.webp, <key>.cls (class index, ASCII int),
                           optional <key>.txt (one caption per line: image-text retrieval), optional <key>.json
    or the same member files directly in <dir>; or clip_benchmark's layout, the shards in <dir>/test/

The tasks are inferred from what is there (docs/eval.md "Evaluation sets"): zero-shot classification when
classnames.txt exists, image-text retrieval when the samples carry captions. Every problem is one
ConfigError line naming the file.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curate.errors import ConfigError, first_line

CLASSNAMES_FILE = "classnames.txt"
TEMPLATES_FILES = ("templates.txt", "zeroshot_classification_templates.txt")
CLIP_BENCHMARK_SPLIT = "test"  # clip_benchmark keeps a set's shards in <dir>/<split>/
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
LABEL_EXT = "cls"
CAPTION_EXT = "txt"
META_EXT = "json"
CLASS_PLACEHOLDER = "{c}"
ZEROSHOT = "zeroshot"
RETRIEVAL = "retrieval"
# Files a set folder may hold beside its samples: never read as sample members.
_METADATA_FILES = frozenset({CLASSNAMES_FILE, *TEMPLATES_FILES, "dataset_type.txt", "nshards.txt", "count.txt"})
_MEMBER_EXTS = frozenset({*IMAGE_EXTS, LABEL_EXT, CAPTION_EXT, META_EXT})


@dataclass
class EvalSample:
    """One sample to write with write_evalset; `ext` defaults to the image's sniffed format."""

    key: str
    image: bytes
    label: int | None = None
    captions: list[str] | None = None
    meta: dict[str, Any] | None = None
    ext: str | None = None


@dataclass
class EvalSet:
    """A loaded evaluation set; every per-sample list (and `labels`) is aligned with `keys`.

    Samples whose image cannot be decoded are dropped at load (counted in `undecodable`, named in
    `undecodable_keys`), so a metric's per-example arrays line up with `keys` for every model.
    """

    name: str
    path: str
    keys: list[str]
    images: list[bytes]
    labels: np.ndarray | None  # int64 class index per sample (zero-shot sets)
    captions: list[list[str]] | None  # captions per sample (retrieval sets)
    classnames: list[str] | None
    templates: list[str] | None
    undecodable: int = 0
    undecodable_keys: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this set supports: "zeroshot" and/or "retrieval"."""
        out: list[str] = []
        if self.classnames is not None:
            out.append(ZEROSHOT)
        if self.captions is not None:
            out.append(RETRIEVAL)
        return tuple(out)

    def __len__(self) -> int:
        return len(self.keys)


def _split_member(name: str) -> tuple[str, str] | None:
    """(key, ext) as webdataset splits a member name: the key ends at the first dot of the base name."""
    name = name[2:] if name.startswith("./") else name
    folder, _, base = name.rpartition("/")
    if not base or base.startswith("."):
        return None
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        return None
    ext = ext.lower()
    if ext not in _MEMBER_EXTS:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext


@dataclass
class _Member:
    source: str  # what an error names: a file path, or "<tar>:<member>"
    data: bytes


def _read_tar(path: Path) -> Iterator[tuple[str, str, _Member]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                split = _split_member(info.name)
                if split is None:
                    continue
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file always has a handle
                yield split[0], split[1], _Member(f"{path}:{info.name}", handle.read())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ConfigError(f"evaluation set shard {path}: cannot be read as a tar ({type(exc).__name__}: "
                          f"{first_line(exc, 120)})") from exc


def _read_folder(files: list[Path]) -> Iterator[tuple[str, str, _Member]]:
    for path in files:
        split = _split_member(path.name)
        if split is not None:
            yield split[0], split[1], _Member(str(path), path.read_bytes())


def _loose_members(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name not in _METADATA_FILES
                  and _split_member(p.name) is not None)


def _sources(root: Path) -> tuple[list[Path], list[Path]]:
    """(tar shards, loose member files) the set is read from, in a fixed order."""
    tars = sorted(p for p in root.glob("*.tar") if p.is_file())
    if tars:
        return tars, []
    loose = _loose_members(root)
    if loose:
        return [], loose
    split = root / CLIP_BENCHMARK_SPLIT
    if split.is_dir():
        return sorted(p for p in split.glob("*.tar") if p.is_file()), []
    return [], []


def _group(root: Path) -> dict[str, dict[str, _Member]]:
    """Members by key, keys in the order they first appear (sorted shards, tar member order)."""
    tars, loose = _sources(root)
    groups: dict[str, dict[str, _Member]] = {}
    owner: dict[str, str] = {}  # key -> the shard (or folder) it came from
    streams = [(str(t), _read_tar(t)) for t in tars] if tars else [(str(root), _read_folder(loose))]
    for origin, stream in streams:
        for key, ext, member in stream:
            if key in owner and owner[key] != origin:
                raise ConfigError(f"evaluation set {root}: sample key {key!r} is in both {owner[key]} and {origin}")
            owner[key] = origin
            members = groups.setdefault(key, {})
            if ext in members:
                raise ConfigError(f"{member.source}: duplicate member (sample {key!r} already has a .{ext})")
            members[ext] = member
    return groups


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return [line.strip() for line in text.splitlines()]


def _read_classnames(path: Path) -> list[str]:
    lines = _read_lines(path)
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise ConfigError(f"{path}: class names file is empty")
    # Line i names class i: a blank line would shift every later class, so it is an error, not skipped.
    if "" in lines:
        raise ConfigError(f"{path}: line {lines.index('') + 1} is blank; line i must name class i")
    return lines


def _read_templates(root: Path) -> list[str]:
    path = next((root / n for n in TEMPLATES_FILES if (root / n).is_file()), None)
    if path is None:
        raise ConfigError(f"{root / TEMPLATES_FILES[0]}: missing templates file (needed with {CLASSNAMES_FILE} "
                          f"for zero-shot; one prompt per line containing {CLASS_PLACEHOLDER})")
    templates = [line for line in _read_lines(path) if line]
    if not templates:
        raise ConfigError(f"{path}: templates file is empty")
    for i, template in enumerate(templates, 1):
        if CLASS_PLACEHOLDER not in template:
            raise ConfigError(f"{path}: template {i} {template!r} has no {CLASS_PLACEHOLDER} placeholder")
    return templates


def _parse_label(member: _Member, n_classes: int) -> int:
    try:
        label = int(member.data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{member.source}: class index is not an integer ({member.data[:20]!r})") from exc
    if not 0 <= label < n_classes:
        raise ConfigError(f"{member.source}: class index {label} is out of range (0..{n_classes - 1}, "
                          f"{n_classes} class names)")
    return label


def _parse_captions(member: _Member) -> list[str]:
    try:
        text = member.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{member.source}: captions are not UTF-8 text") from exc
    captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise ConfigError(f"{member.source}: caption file is empty")
    return captions


def _decodes(data: bytes) -> bool:
    # Eval images are untrusted files: whatever PIL raises on one (truncation, bad header, a
    # decompression bomb) means "this image cannot be used", never a crash of the whole evaluation.
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.convert("RGB")
        return True
    except Exception:
        return False


def decodable(images: list[bytes]) -> np.ndarray:
    """Boolean mask of the images PIL decodes fully (threads: PIL releases the GIL while decoding)."""
    if not images:
        return np.zeros(0, dtype=bool)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return np.fromiter(pool.map(_decodes, images), dtype=bool, count=len(images))


def load_evalset(path: str, name: str | None = None) -> EvalSet:
    """Read and validate the evaluation set at `path` (format in the module docstring)."""
    root = Path(os.path.expanduser(path))
    if not root.is_dir():
        raise ConfigError(f"evaluation set {path}: no such directory")
    groups = _group(root)
    if not groups:
        raise ConfigError(f"evaluation set {path}: no samples (no *.tar shards, no <key>.png/.jpg/.jpeg/.webp files)")

    classnames_path = root / CLASSNAMES_FILE
    classnames = _read_classnames(classnames_path) if classnames_path.is_file() else None
    templates = _read_templates(root) if classnames is not None else None

    keys: list[str] = []
    images: list[bytes] = []
    labels: list[int] = []
    captions: list[list[str]] = []
    first_with: _Member | None = None  # the first sample with captions, and without, for the mixed error
    first_without: _Member | None = None
    for key, members in groups.items():
        found = [ext for ext in IMAGE_EXTS if ext in members]
        some = next(iter(members.values()))
        if not found:
            raise ConfigError(f"{some.source}: sample {key!r} has no image (.{', .'.join(IMAGE_EXTS)})")
        if len(found) > 1:
            raise ConfigError(f"{members[found[1]].source}: sample {key!r} has more than one image "
                              f"({', '.join('.' + e for e in found)})")
        image = members[found[0]]
        label = members.get(LABEL_EXT)
        if classnames is None:
            if label is not None:
                raise ConfigError(f"{classnames_path}: missing class names file ({label.source} has a class index)")
        elif label is None:
            raise ConfigError(f"{image.source}: sample {key!r} has no .{LABEL_EXT} class index "
                              f"(every sample of a zero-shot set needs one)")
        else:
            labels.append(_parse_label(label, len(classnames)))
        text = members.get(CAPTION_EXT)
        if text is not None:
            captions.append(_parse_captions(text))
            first_with = first_with or text
        else:
            first_without = first_without or image
        keys.append(key)
        images.append(image.data)

    if first_with is not None and first_without is not None:
        raise ConfigError(f"{first_without.source}: mixed captions: this sample has no .{CAPTION_EXT} but "
                          f"{first_with.source} has; a retrieval set needs captions on every sample")
    has_captions = first_with is not None
    if classnames is None and not has_captions:
        raise ConfigError(f"evaluation set {path}: no task: no {CLASSNAMES_FILE} (zero-shot) and no "
                          f".{CAPTION_EXT} captions (retrieval)")

    ok = decodable(images)
    if not ok.all():
        bad = [k for k, good in zip(keys, ok, strict=True) if not good]
        if not ok.any():
            raise ConfigError(f"evaluation set {path}: none of its {len(keys)} images can be decoded "
                              f"(first: {bad[0]!r})")
        keep = np.flatnonzero(ok)
        keys = [keys[i] for i in keep]
        images = [images[i] for i in keep]
        labels = [labels[i] for i in keep] if classnames is not None else labels
        captions = [captions[i] for i in keep] if has_captions else captions
    else:
        bad = []
    return EvalSet(
        name=name or root.resolve().name, path=str(root), keys=keys, images=images,
        labels=np.asarray(labels, dtype=np.int64) if classnames is not None else None,
        captions=captions if has_captions else None, classnames=classnames, templates=templates,
        undecodable=len(bad), undecodable_keys=bad,
    )


def evalset_identity(path: str) -> list[list[str | int]]:
    """(relative path, size, mtime in ns) of every file the set is read from, without reading them:
    a resume fingerprint (an evaluation recorded with the same identity saw the same set)."""
    root = Path(os.path.expanduser(path))
    if not root.is_dir():
        raise ConfigError(f"evaluation set {path}: no such directory")
    tars, loose = _sources(root)
    files = [*tars, *loose, *(root / n for n in (CLASSNAMES_FILE, *TEMPLATES_FILES) if (root / n).is_file())]
    out: list[list[str | int]] = []
    for file in sorted(files):
        st = file.stat()
        out.append([file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
    return out


def _sniff_ext(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644  # mtime stays 0: the same samples always make the same bytes
    tar.addfile(info, io.BytesIO(data))


def _write_sample(tar: tarfile.TarFile, sample: EvalSample) -> None:
    if "." in sample.key or "/" in sample.key or not sample.key:
        raise ValueError(f"sample key {sample.key!r} must be non-empty without '.' or '/'")
    _add(tar, f"{sample.key}.{sample.ext or _sniff_ext(sample.image)}", sample.image)
    if sample.label is not None:
        _add(tar, f"{sample.key}.{LABEL_EXT}", str(int(sample.label)).encode("ascii"))
    if sample.captions is not None:
        _add(tar, f"{sample.key}.{CAPTION_EXT}", "".join(f"{c}\n" for c in sample.captions).encode("utf-8"))
    if sample.meta is not None:
        _add(tar, f"{sample.key}.{META_EXT}", json.dumps(sample.meta).encode("utf-8"))


def write_evalset(path: str | Path, samples: Iterable[EvalSample], classnames: list[str] | None,
                  templates: list[str] | None, per_shard: int = 1000) -> Path:
    """Write samples as webdataset shards `<path>/00000.tar`, ... plus classnames.txt / templates.txt
    when given (None writes no file); returns the folder. For tests, fixtures and set builders."""
    if per_shard < 1:
        raise ValueError("per_shard must be at least 1")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if classnames is not None:
        (out / CLASSNAMES_FILE).write_text("".join(f"{c}\n" for c in classnames), encoding="utf-8")
    if templates is not None:
        (out / TEMPLATES_FILES[0]).write_text("".join(f"{t}\n" for t in templates), encoding="utf-8")
    stream = iter(samples)
    shard = 0
    while batch := list(islice(stream, per_shard)):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for sample in batch:
                _write_sample(tar, sample)
        shard += 1
    return out
