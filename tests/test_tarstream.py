"""curate.tarstream reads what tarfile writes, in every header format, and rejects damaged tars."""

from __future__ import annotations

import io
import tarfile

import pytest

from curate.tarstream import TarStreamError, iter_tar_files

FILES = [
    ("000000001.jpg", b"\xff\xd8" + bytes(range(256)) * 7),
    ("000000001.txt", "a caption with ünïcödé".encode()),
    ("000000001.json", b'{"uid": "x"}'),
    ("empty.txt", b""),
    ("exactly-a-block.bin", b"z" * 512),
    ("dir/" + "long-name-" * 20 + ".jpg", b"long"),  # > 100 characters: pax path / GNU long name
    ("ünïcödé-名前.txt", b"non-ascii name"),
]


def _tar(fmt: int, with_dir: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        if with_dir:
            info = tarfile.TarInfo("dir")
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in FILES:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a-link")
        link.type = tarfile.SYMTYPE
        link.linkname = "000000001.jpg"
        tar.addfile(link)
    return buf.getvalue()


def _tarfile_reading(raw: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]  # type: ignore[union-attr]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_reads_what_tarfile_reads(fmt: int) -> None:
    raw = _tar(fmt)
    ours = list(iter_tar_files(io.BytesIO(raw)))
    assert ours == _tarfile_reading(raw)
    assert ours == FILES


def test_ustar_prefix_names() -> None:
    # ustar splits a long path into prefix + name instead of writing an extra header
    name = "d" * 60 + "/" + "e" * 60 + ".txt"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    assert list(iter_tar_files(io.BytesIO(buf.getvalue()))) == [(name, b"abc")]


def test_stream_without_end_marker_and_empty_stream() -> None:
    raw = _tar(tarfile.PAX_FORMAT, with_dir=False)
    files = list(iter_tar_files(io.BytesIO(raw)))
    data_end = len(raw.rstrip(b"\0"))
    end = data_end + -data_end % 512  # just after the last file's data: no end-of-archive blocks
    assert [n for n, _ in iter_tar_files(io.BytesIO(raw[:end]))] == [n for n, _ in files]
    assert list(iter_tar_files(io.BytesIO(b""))) == []


@pytest.mark.fault("score/export/dfn (shard reader)", "a damaged tar header (checksum no longer matches)",
                   "TarStreamError; the shard is reported failed, nothing garbled is read")
def test_damaged_header_raises() -> None:
    raw = bytearray(_tar(tarfile.PAX_FORMAT, with_dir=False))
    header = raw.index(b"000000001.txt\0")
    assert header % 512 == 0
    raw[header + 3] ^= 0x01  # a later header's name: its checksum no longer matches
    with pytest.raises(TarStreamError, match="checksum"):
        list(iter_tar_files(io.BytesIO(bytes(raw))))


@pytest.mark.fault("score/export/dfn (shard reader)", "a tar cut short inside a header or a member",
                   "TarStreamError naming the cut")
def test_truncated_member_raises() -> None:
    raw = _tar(tarfile.PAX_FORMAT, with_dir=False)
    cut = raw.index(bytes(range(256))) + 300  # in the middle of the first file's data
    with pytest.raises(TarStreamError, match="cut short"):
        list(iter_tar_files(io.BytesIO(raw[:cut])))
    with pytest.raises(TarStreamError, match="cut short"):
        list(iter_tar_files(io.BytesIO(raw[:700])))  # in the middle of a header


@pytest.mark.fault("score/export/dfn (shard reader)", "garbage bytes instead of a tar", "TarStreamError")
def test_garbage_raises() -> None:
    with pytest.raises(TarStreamError):
        list(iter_tar_files(io.BytesIO(b"this is not a tar file at all " * 40)))
