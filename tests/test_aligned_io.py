"""Aligned safetensors I/O: every tensor written starts at a multiple of its itemsize, and every
tensor read is aligned in memory, whoever wrote the file; the kernels never see a misaligned pointer."""
from __future__ import annotations

import json
import mmap
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import save_file

import tiny_models
from hf_lines import LinesMerger
from hf_lines.core import kernels
from hf_lines.io.buffers import OutputBuffers
from hf_lines.io.checkpoint import SAFETENSORS_DTYPES, Checkpoint, TensorInfo
from hf_lines.io.writer import ShardedWriter
from reference import assert_close_dict, lines_reference, load_folder

CODES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


def mixed_tensors() -> dict[str, torch.Tensor]:
    """Interleaved dtypes with odd sizes: written in this order, most would start misaligned."""
    g = torch.Generator().manual_seed(0)
    specs = [("bf16", torch.bfloat16, 3), ("f32", torch.float32, 5), ("i64", torch.int64, 3),
             ("bool", torch.bool, 7), ("f16", torch.float16, 9), ("i32", torch.int32, 3),
             ("u8", torch.uint8, 5), ("f64", torch.float64, 2)]
    out = {}
    for k in range(3):
        for tag, dtype, n in specs:
            if dtype.is_floating_point:
                t = torch.randn(n + k, generator=g).to(dtype)
            elif dtype == torch.bool:
                t = torch.randint(0, 2, (n + k,), generator=g).bool()
            else:
                t = torch.randint(-100 if dtype.is_signed else 0, 100, (n + k,), generator=g).to(dtype)
            out[f"t{k}.{tag}"] = t.reshape(1, -1) if k == 1 else t
    return out


def write(folder: Path, tensors: dict[str, torch.Tensor], max_shard_size: int | str = "5GB") -> ShardedWriter:
    folder.mkdir(parents=True, exist_ok=True)
    writer = ShardedWriter(folder, {n: TensorInfo(tuple(t.shape), t.dtype) for n, t in tensors.items()}, max_shard_size)
    for n in writer.order:
        writer.write(n, tensors[n])
    writer.close()
    return writer


def header(path: Path) -> tuple[int, dict]:
    """(absolute offset of the data section, tensor entries) of a safetensors file."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        entries = json.loads(f.read(n))
    entries.pop("__metadata__", None)
    return 8 + n, entries


def write_unaligned(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """A valid safetensors file laid out in the order given, without alignment, as some writers do."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for n, t in tensors.items():
        size = t.numel() * t.element_size()
        entries[n] = {"dtype": CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-(len(raw) + 8) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for t in tensors.values():
            f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def assert_file_aligned(path: Path) -> None:
    start, entries = header(path)
    assert start % 8 == 0
    for n, e in entries.items():
        itemsize = SAFETENSORS_DTYPES[e["dtype"]].itemsize
        assert e["data_offsets"][0] % itemsize == 0, (path.name, n, e)


@pytest.mark.parametrize("max_shard_size", ["5GB", 120], ids=["one-shard", "shards"])
def test_mixed_dtypes_round_trip_aligned(tmp_path, max_shard_size):
    tensors = mixed_tensors()
    writer = write(tmp_path / "out", tensors, max_shard_size)
    files = sorted((tmp_path / "out").glob("*.safetensors"))
    assert (len(files) > 1) == (max_shard_size != "5GB")
    for _, names in writer.shards:  # every shard mixes dtypes: the case that needs the ordering
        assert len({tensors[n].dtype for n in names}) > 2
    for f in files:
        assert_file_aligned(f)
    # output buffers start at the file phase of their tensor: that phase must suit the dtype too
    phases = writer.phases()
    for n, t in tensors.items():
        assert phases[n] % t.element_size() == 0, n
        OutputBuffers(1, phases=phases).take(n, t.shape, t.dtype)  # a misaligned phase refuses the view

    loaded = load_folder(tmp_path / "out")
    assert set(loaded) == set(tensors)
    ckpt = Checkpoint(tmp_path / "out")
    for n, t in tensors.items():
        assert loaded[n].dtype == t.dtype and torch.equal(loaded[n], t), n
        got = ckpt.get(n)
        assert got.dtype == t.dtype and torch.equal(got, t), n
        assert got.data_ptr() % got.element_size() == 0, n
    if max_shard_size != "5GB":
        index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
        assert set(index["weight_map"]) == set(tensors)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_single_dtype_layout_is_unchanged(tmp_path, dtype):
    g = torch.Generator().manual_seed(1)
    # natural order (layers.2 before layers.10), as the engine streams, with odd sizes
    names = [f"model.layers.{i}.{p}" for i in (0, 1, 2, 10) for p in ("mlp.weight", "norm.weight")] + ["z.bias"]
    tensors = {n: torch.randn(2 * i + 1, generator=g).to(dtype) for i, n in enumerate(names)}
    writer = write(tmp_path / "out", tensors)
    assert writer.order == names
    # the layout written before tensors were grouped by itemsize: the given order, back to back
    data = (tmp_path / "out" / "model.safetensors").read_bytes()
    start, entries = header(tmp_path / "out" / "model.safetensors")
    assert list(entries) == names
    assert data[start:] == b"".join(t.view(torch.uint8).numpy().tobytes() for t in tensors.values())
    # and where the given order is the name order, the very bytes safetensors writes
    ordered = dict(sorted(tensors.items()))
    write(tmp_path / "sorted", ordered)
    save_file(ordered, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "sorted" / "model.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_misaligned_file_is_read_aligned(tmp_path):
    """A file from a writer that does not align: values equal, memory aligned, aligned tensors still mapped."""
    tensors = {"a.flag": torch.tensor([True]), "b.f32": torch.randn(5), "c.bf16": torch.randn(3).bfloat16(),
               "d.i64": torch.arange(3), "e.f32": torch.randn(4), "f.f16": torch.randn(2).half()}
    folder = tmp_path / "model"
    folder.mkdir()
    write_unaligned(folder / "model.safetensors", tensors)
    start, entries = header(folder / "model.safetensors")
    misaligned = {n for n, e in entries.items() if (start + e["data_offsets"][0]) % tensors[n].element_size()}
    assert misaligned == {"b.f32", "c.bf16", "d.i64", "e.f32", "f.f16"}

    ckpt = Checkpoint(folder)
    for n, t in tensors.items():
        got = ckpt.get(n)
        assert got.dtype == t.dtype and torch.equal(got, t), n
        assert got.data_ptr() % got.element_size() == 0, n
        # a mapping is memory torch did not allocate and cannot resize; a copy is its own
        assert got.untyped_storage().resizable() == (n in misaligned), n


@pytest.mark.skipif(not kernels.available(), reason="native kernels not built")
def test_kernels_refuse_misaligned_pointers():
    m = mmap.mmap(-1, 4096)
    aligned = torch.frombuffer(m, dtype=torch.float32, count=8, offset=16)
    shifted = torch.frombuffer(m, dtype=torch.float32, count=8, offset=18)
    assert shifted.data_ptr() % 4 == 2
    assert kernels._usable([aligned, aligned]) is not None  # noqa: SLF001
    assert kernels._usable([aligned, shifted]) is None  # noqa: SLF001
    assert kernels._usable([shifted, aligned]) is None  # noqa: SLF001


def mixed_llama(seed: int | None) -> transformers.PreTrainedModel:
    """A tiny LLaMA as older checkpoints come: bf16 body, float32 norms, saved bool and int64 buffers."""
    model = tiny_models.build("llama", 0, torch.bfloat16)
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.float()
    # 3 bytes early in the name order: whatever follows is misaligned unless the writer reorders
    model.model.register_buffer("attention_flags", torch.tensor([True, False, True]))
    model.model.register_buffer("position_ids", torch.arange(5).unsqueeze(0))
    return model if seed is None else tiny_models.finetune_like(model, seed)


@pytest.fixture(scope="module")
def mixed_pair(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mixed")
    return tiny_models.save(mixed_llama(None), root / "base"), tiny_models.save(mixed_llama(7), root / "ft")


def spy_kernel_inputs(monkeypatch) -> tuple[list[str], list[str]]:
    """(every tensor offered to the kernels, the misaligned ones): recorded, then checked as usual."""
    offered: list[str] = []
    misaligned: list[str] = []
    usable = kernels._usable  # noqa: SLF001

    def spy(tensors):
        for t in tensors:
            (misaligned if t.data_ptr() % t.element_size() else offered).append(f"{t.dtype} at {t.data_ptr():#x}")
        return usable(tensors)

    monkeypatch.setattr(kernels, "_usable", spy)
    return offered, misaligned


def test_mixed_dtype_model_merges_and_loads(mixed_pair, tmp_path, monkeypatch):
    base, ft = mixed_pair
    dtypes = {t.dtype for t in load_folder(base).values()}
    assert {torch.bfloat16, torch.float32, torch.int64, torch.bool} <= dtypes
    offered, misaligned = spy_kernel_inputs(monkeypatch)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.3, beta=0.5)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    assert misaligned == [] and (offered or not kernels.available())
    assert_file_aligned(out / "model.safetensors")
    got = load_folder(out)
    assert_close_dict(got, lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales()))
    assert {n: t.dtype for n, t in got.items()} == {n: t.dtype for n, t in load_folder(base).items()}

    model = transformers.LlamaForCausalLM.from_pretrained(out)
    for n, p in model.named_parameters():
        assert torch.equal(p.to(got[n].dtype), got[n]), n

    # merging the merge: the output read back is aligned in memory
    again = LinesMerger.from_pretrained(out, [ft], alpha=0.3, beta=0.5)
    again = again.save_pretrained(tmp_path / "again", progress=False)
    assert misaligned == []
    assert_file_aligned(again / "model.safetensors")


def test_merge_over_misaligned_checkpoints(mixed_pair, tmp_path, monkeypatch):
    """Inputs from a writer that does not align: the merge reads aligned copies and equals the reference."""
    folders = []
    for src in mixed_pair:
        dst = tmp_path / src.name
        dst.mkdir()
        (dst / "config.json").write_text((src / "config.json").read_text())
        write_unaligned(dst / "model.safetensors", dict(sorted(load_folder(src).items())))
        folders.append(dst)
    start, entries = header(folders[0] / "model.safetensors")
    assert any((start + e["data_offsets"][0]) % SAFETENSORS_DTYPES[e["dtype"]].itemsize for e in entries.values())

    offered, misaligned = spy_kernel_inputs(monkeypatch)
    merger = LinesMerger.from_pretrained(folders[0], folders[1:], alpha=0.3, beta=0.5)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    assert misaligned == [] and (offered or not kernels.available())
    expected = lines_reference(load_folder(folders[0]), [load_folder(folders[1])], [1.0], merger.scales())
    assert_close_dict(load_folder(out), expected)
    assert_file_aligned(out / "model.safetensors")
