"""FileSink: direct and buffered writes give the same bytes, whatever the piece sizes."""
from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

from hf_lines.io.file_sink import ALIGN, FileSink, Staging

HAS_DIRECT = hasattr(os, "O_DIRECT")


def pieces(total: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, left = [], total
    while left:
        n = min(left, rng.choice([1, 7, ALIGN - 1, ALIGN, ALIGN + 3, 70_001, 300_000, 1_500_001]))
        out.append(rng.randbytes(n))
        left -= n
    return out


@pytest.mark.parametrize("total", [0, 1, ALIGN, 3 * ALIGN + 5, 1_000_003, 5_000_000])
@pytest.mark.parametrize("mode", ["auto", "buffered"])
@pytest.mark.parametrize("writable", [False, True])  # writable pieces of 1 MB and more take the GIL-free copy
def test_bytes_round_trip(tmp_path: Path, total: int, mode: str, writable: bool):
    data = pieces(total, seed=total)
    if writable:
        data = [bytearray(p) for p in data]
    staging = Staging(64 * 1024)  # small, so that large pieces span several flushes
    try:
        with FileSink(tmp_path / "f.bin", mode, staging) as sink:
            for p in data:
                sink.write(p)
    finally:
        staging.close()
    assert (tmp_path / "f.bin").read_bytes() == b"".join(data)
    assert sink.size == total


@pytest.mark.skipif(not HAS_DIRECT, reason="no O_DIRECT on this platform")
def test_auto_uses_direct_io_on_a_disk_filesystem(tmp_path: Path):
    sink = FileSink(tmp_path / "f.bin")
    try:
        if not sink.direct:
            pytest.skip(f"{tmp_path} refuses O_DIRECT")
        sink.write(b"x" * 10)
    finally:
        sink.close()
    assert (tmp_path / "f.bin").read_bytes() == b"x" * 10


@pytest.mark.skipif(not HAS_DIRECT, reason="no O_DIRECT on this platform")
def test_a_filesystem_refusing_o_direct_gets_page_cache_writes(tmp_path: Path, monkeypatch):
    real_open = os.open

    def refusing_open(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refusing_open)
    with FileSink(tmp_path / "f.bin") as sink:
        sink.write(b"abc" * 5000)
    assert not sink.direct
    assert (tmp_path / "f.bin").read_bytes() == b"abc" * 5000
    with pytest.raises(OSError):
        FileSink(tmp_path / "g.bin", mode="direct")


@pytest.mark.skipif(not HAS_DIRECT, reason="no O_DIRECT on this platform")
@pytest.mark.parametrize("total", [10, 200_000])
def test_alignment_refused_at_the_first_write_falls_back(tmp_path: Path, monkeypatch, total: int):
    sink = FileSink(tmp_path / "f.bin", staging=Staging(64 * 1024))
    if not sink.direct:
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    real_pwrite, calls = os.pwrite, []

    def picky_pwrite(fd, data, offset):
        calls.append(offset)
        if len(calls) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", picky_pwrite)
    data = bytes(range(256)) * (total // 256) + b"z" * (total % 256)
    sink.write(data[:7])
    sink.write(data[7:])
    sink.close()
    assert not sink.direct
    assert (tmp_path / "f.bin").read_bytes() == data


def test_abort_leaves_the_file_for_the_caller_and_closes_it(tmp_path: Path):
    sink = FileSink(tmp_path / "f.bin")
    sink.write(b"y" * 100)
    sink.abort()
    sink.abort()  # idempotent
    assert (tmp_path / "f.bin").exists()


def test_unknown_mode_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="write mode"):
        FileSink(tmp_path / "f.bin", mode="fast")  # type: ignore[arg-type]


def phased(data: bytes, phase: int) -> memoryview:
    """A writable copy of ``data`` whose first byte sits at ``phase`` modulo ALIGN."""
    import mmap

    m = mmap.mmap(-1, len(data) + 2 * ALIGN)
    view = memoryview(m)[phase : phase + len(data)]
    view[:] = data
    return view


@pytest.mark.skipif(not HAS_DIRECT, reason="no O_DIRECT on this platform")
def test_buffers_at_the_file_phase_are_written_in_place(tmp_path: Path, monkeypatch):
    rng = random.Random(3)
    head, big, mid, big2 = (rng.randbytes(n) for n in (37, 3_000_001, 100, 2_100_000))
    sink = FileSink(tmp_path / "f.bin", staging=Staging(64 * 1024))
    if not sink.direct:
        pytest.skip(f"{tmp_path} refuses O_DIRECT")
    in_place = []
    original = FileSink._write_in_place
    monkeypatch.setattr(FileSink, "_write_in_place", lambda self, view: (in_place.append(len(view)), original(self, view)))
    sink.write(rng.randbytes(70_000))  # fills and checks the staging path first
    sink.write(head)
    sink.write(phased(big, sink.size % ALIGN))
    sink.write(mid)
    sink.write(phased(big2, (sink.size + 1) % ALIGN))  # off phase: staged
    sink.write(phased(big2, sink.size % ALIGN))
    sink.close()
    assert in_place == [len(big), len(big2)]
    data = (tmp_path / "f.bin").read_bytes()
    assert data[70_000:] == head + big + mid + big2 + big2


def test_write_modes_give_the_same_checkpoint(family_models, tmp_path: Path):
    from hf_lines import LinesMerger
    from hf_lines.cli import main

    base, fts = family_models("llama", n_models=2)
    merger = LinesMerger.from_pretrained(base, fts, alpha=0.3, beta=0.6)
    outs = {mode: merger.save_pretrained(tmp_path / mode, write_mode=mode, progress=False, max_shard_size="40KB")
            for mode in ("auto", "buffered")}
    shards = sorted(p.name for p in outs["auto"].glob("*.safetensors"))
    assert len(shards) > 1 and shards == sorted(p.name for p in outs["buffered"].glob("*.safetensors"))
    for name in shards:
        assert (outs["auto"] / name).read_bytes() == (outs["buffered"] / name).read_bytes()
    rc = main(["scale", str(base), str(fts[0]), "-o", str(tmp_path / "cli"), "--alpha", "0.3", "--beta", "0.6",
               "--write-mode", "buffered", "-q"])
    assert rc == 0 and (tmp_path / "cli" / "model.safetensors").exists()


def test_a_full_disk_names_the_file_and_leaves_nothing(family_models, tmp_path: Path, monkeypatch):
    from hf_lines import LinesMerger
    from hf_lines.errors import OutputWriteError

    base, (ft,) = family_models("llama")
    def full_disk(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full_disk)
    with pytest.raises(OutputWriteError, match=r"model\.safetensors failed: No space left on device; free space"):
        LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(
            tmp_path / "out", progress=False, write_mode="auto")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
