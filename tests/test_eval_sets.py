"""Evaluation sets on disk (curate.evaluation.evalsets): the format, task inference, and every bad input."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curate.errors import ConfigError
from curate.evaluation.evalsets import (
    RETRIEVAL,
    ZEROSHOT,
    EvalSample,
    evalset_identity,
    load_evalset,
    write_evalset,
)

CLASSES = ["cat", "dog", "bird"]
TEMPLATES = ["a photo of a {c}.", "a {c}"]


def png(value: int, size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, 255 - value, 7)).save(buf, format="PNG")
    return buf.getvalue()


def jpg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 0, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def samples(n: int, labels: bool = True, captions: bool = False) -> list[EvalSample]:
    return [EvalSample(key=f"s{i:04d}", image=png(i), label=i % len(CLASSES) if labels else None,
                       captions=[f"caption {i}", f"another {i}"][: 1 + i % 2] if captions else None)
            for i in range(n)]


def one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_round_trip_zero_shot_and_retrieval_across_shards(tmp_path: Path) -> None:
    written = samples(7, labels=True, captions=True)
    write_evalset(tmp_path / "set", written, CLASSES, TEMPLATES, per_shard=3)
    assert sorted(p.name for p in (tmp_path / "set").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    es = load_evalset(str(tmp_path / "set"))
    assert es.name == "set" and es.tasks == (ZEROSHOT, RETRIEVAL)
    assert es.keys == [s.key for s in written]
    assert es.images == [s.image for s in written]
    assert es.labels is not None and es.labels.dtype == np.int64
    assert es.labels.tolist() == [s.label for s in written]
    assert es.captions == [s.captions for s in written]
    assert es.classnames == CLASSES and es.templates == TEMPLATES
    assert es.undecodable == 0 and len(es) == 7
    assert load_evalset(str(tmp_path / "set"), name="mine").name == "mine"


def test_tasks_are_inferred(tmp_path: Path) -> None:
    write_evalset(tmp_path / "zs", samples(3), CLASSES, TEMPLATES)
    write_evalset(tmp_path / "ret", samples(3, labels=False, captions=True), None, None)
    zs, ret = load_evalset(str(tmp_path / "zs")), load_evalset(str(tmp_path / "ret"))
    assert zs.tasks == (ZEROSHOT,) and zs.captions is None
    assert ret.tasks == (RETRIEVAL,) and ret.labels is None and ret.classnames is None and ret.templates is None


def test_unpacked_folder_reads_like_shards(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    root.mkdir()
    (root / "classnames.txt").write_text("cat\ndog\nbird\n", encoding="utf-8")
    (root / "templates.txt").write_text("a {c}\n\nthe {c}\n", encoding="utf-8")  # blank template lines are skipped
    (root / "b.jpg").write_bytes(jpg(1))
    (root / "b.cls").write_text("2\n")
    (root / "a.webp").write_bytes(_webp())
    (root / "a.cls").write_text(" 0 ")
    (root / "README.md").write_text("not a sample")
    es = load_evalset(str(root))
    assert es.keys == ["a", "b"]  # sorted file names
    assert es.labels is not None and es.labels.tolist() == [0, 2]
    assert es.templates == ["a {c}", "the {c}"]


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, format="WEBP")
    return buf.getvalue()


def test_clip_benchmark_layout_is_accepted(tmp_path: Path) -> None:
    """clip_benchmark's wds sets: shards under test/, templates in zeroshot_classification_templates.txt,
    member keys with a folder part (webdataset splits the key at the base name's first dot)."""
    root = tmp_path / "wds_x"
    (root / "test").mkdir(parents=True)
    (root / "classnames.txt").write_text("cat\ndog\n", encoding="utf-8")
    (root / "zeroshot_classification_templates.txt").write_text("a photo of a {c}.\n", encoding="utf-8")
    (root / "test" / "nshards.txt").write_text("1\n")
    write_tar(root / "test" / "0.tar", {"./d/s0.webp": _webp(), "./d/s0.cls": b"1", "d/s1.jpg": jpg(3),
                                         "d/s1.cls": b"0", "d/s1.extra.json": b"{}"})
    es = load_evalset(str(root))
    assert es.keys == ["d/s0", "d/s1"] and es.labels is not None and es.labels.tolist() == [1, 0]
    assert es.templates == ["a photo of a {c}."]


def test_identity_changes_when_a_file_changes(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(4), CLASSES, TEMPLATES, per_shard=2)
    first = evalset_identity(str(root))
    assert [row[0] for row in first] == ["00000.tar", "00001.tar", "classnames.txt", "templates.txt"]
    assert evalset_identity(str(root)) == first
    (root / "templates.txt").write_text("a {c}\n")
    os.utime(root / "templates.txt", ns=(1, 1))
    assert evalset_identity(str(root)) != first


# --- bad inputs -----------------------------------------------------------------------------------------------


@pytest.mark.fault("eval", "an evaluation set folder that does not exist", "one-line ConfigError naming the path")
def test_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_evalset(str(tmp_path / "nope"))
    assert "nope" in one_line(err) and "no such directory" in str(err.value)
    with pytest.raises(ConfigError):
        evalset_identity(str(tmp_path / "nope"))


@pytest.mark.fault("eval", "an evaluation set with no samples", "one-line ConfigError naming the folder")
def test_no_samples(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    (root / "classnames.txt").write_text("cat\n")
    (root / "templates.txt").write_text("a {c}\n")
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert str(root) in one_line(err) and "no samples" in str(err.value)


@pytest.mark.fault("eval", "samples with .cls but no classnames.txt",
                   "one-line ConfigError: missing class names file, naming it")
def test_class_index_without_classnames(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2, captions=True), None, TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "missing class names file" in one_line(err) and str(root / "classnames.txt") in str(err.value)


@pytest.mark.fault("eval", "a template without {c}", "one-line ConfigError naming the templates file and the template")
def test_template_without_placeholder(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2), CLASSES, ["a {c}", "a photo"])
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "templates.txt" in one_line(err) and "'a photo'" in str(err.value) and "{c}" in str(err.value)


@pytest.mark.fault("eval", "classnames.txt without a templates file", "one-line ConfigError: missing templates file")
def test_classnames_without_templates(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2), CLASSES, None)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "missing templates file" in one_line(err) and "templates.txt" in str(err.value)


@pytest.mark.fault("eval", "a blank line inside classnames.txt",
                   "one-line ConfigError (it would shift every later class)")
def test_blank_class_name(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2), ["cat", "", "bird"], TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "classnames.txt" in one_line(err) and "line 2" in str(err.value)


@pytest.mark.fault("eval", "a .cls class index out of range", "one-line ConfigError naming the shard member")
@pytest.mark.parametrize("label", [3, -1])
def test_class_index_out_of_range(tmp_path: Path, label: int) -> None:
    bad = [*samples(2), EvalSample(key="bad", image=png(9), label=label)]
    root = write_evalset(tmp_path / "set", bad, CLASSES, TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "00000.tar:bad.cls" in one_line(err) and "out of range" in str(err.value)


@pytest.mark.fault("eval", "a .cls that is not an integer", "one-line ConfigError naming the shard member")
def test_class_index_not_an_int(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    (root / "classnames.txt").write_text("cat\ndog\n")
    (root / "templates.txt").write_text("a {c}\n")
    write_tar(root / "0.tar", {"a.png": png(1), "a.cls": b"1", "b.png": png(2), "b.cls": b"dog"})
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "0.tar:b.cls" in one_line(err) and "not an integer" in str(err.value)


@pytest.mark.fault("eval", "a zero-shot sample without a .cls", "one-line ConfigError naming the sample's image")
def test_sample_without_label(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", [*samples(2), EvalSample(key="nolabel", image=png(3))], CLASSES, TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "nolabel.png" in one_line(err) and ".cls" in str(err.value)


@pytest.mark.fault("eval", "some images undecodable",
                   "those samples are dropped and counted (undecodable, undecodable_keys)")
def test_some_images_undecodable_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = samples(4, captions=True)
    rows[1] = EvalSample(key=rows[1].key, image=b"\x89PNG not really", label=rows[1].label, captions=rows[1].captions)
    rows[3] = EvalSample(key=rows[3].key, image=jpg(5)[:40], label=rows[3].label, captions=rows[3].captions, ext="jpg")
    es = load_evalset(str(write_evalset(tmp_path / "set", rows, CLASSES, TEMPLATES)))
    assert es.keys == [rows[0].key, rows[2].key]
    assert es.undecodable == 2 and es.undecodable_keys == [rows[1].key, rows[3].key]
    assert es.labels is not None and es.labels.tolist() == [rows[0].label, rows[2].label]
    assert es.captions == [rows[0].captions, rows[2].captions]
    assert es.images == [rows[0].image, rows[2].image]


@pytest.mark.fault("eval", "every image undecodable", "one-line ConfigError naming the set and the count")
def test_all_images_undecodable(tmp_path: Path) -> None:
    rows = [EvalSample(key=f"k{i}", image=b"garbage", label=0, ext="jpg") for i in range(3)]
    root = write_evalset(tmp_path / "set", rows, CLASSES, TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert str(root) in one_line(err) and "none of its 3 images" in str(err.value)


@pytest.mark.fault("eval", "captions on some samples only", "one-line ConfigError: mixed captions, naming both samples")
def test_mixed_captions(tmp_path: Path) -> None:
    rows = samples(3, captions=True)
    rows[2] = EvalSample(key=rows[2].key, image=rows[2].image, label=rows[2].label)
    root = write_evalset(tmp_path / "set", rows, CLASSES, TEMPLATES)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "mixed captions" in one_line(err) and f"{rows[2].key}.png" in str(err.value)


@pytest.mark.fault("eval", "a set with neither classnames.txt nor captions", "one-line ConfigError: no task")
def test_no_task(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2, labels=False), None, None)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "no task" in one_line(err) and str(root) in str(err.value)


@pytest.mark.fault("eval", "a sample with no image, or with two", "one-line ConfigError naming the member")
def test_sample_image_count(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    (root / "classnames.txt").write_text("cat\n")
    (root / "templates.txt").write_text("a {c}\n")
    write_tar(root / "0.tar", {"a.png": png(1), "a.cls": b"0", "b.cls": b"0"})
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "0.tar:b.cls" in one_line(err) and "no image" in str(err.value)
    write_tar(root / "0.tar", {"a.png": png(1), "a.jpg": jpg(1), "a.cls": b"0"})
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "0.tar:a.jpg" in one_line(err) and "more than one image" in str(err.value)


@pytest.mark.fault("eval", "a damaged evaluation shard (not a tar)", "one-line ConfigError naming the shard")
def test_damaged_tar(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2), CLASSES, TEMPLATES)
    (root / "00001.tar").write_bytes(b"this is not a tar file at all" * 40)
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "00001.tar" in one_line(err)


@pytest.mark.fault("eval", "the same sample key in two shards", "one-line ConfigError naming both shards")
def test_key_in_two_shards(tmp_path: Path) -> None:
    root = write_evalset(tmp_path / "set", samples(2), CLASSES, TEMPLATES)
    write_tar(root / "00001.tar", {"s0000.png": png(1), "s0000.cls": b"0"})
    with pytest.raises(ConfigError) as err:
        load_evalset(str(root))
    assert "00000.tar" in one_line(err) and "00001.tar" in str(err.value)
