"""``--device cuda``: the same bytes as the CPU path, through pinned, chunked and bounded transfers.

Skipped entirely without a CUDA device (CI has none; ``benchmarks/cuda_check.sh`` runs it on one).

Why the bytes can be the same: the edits (``hf_lines.core.methods.arithmetic``) are separate
elementwise ops, each rounded in float32, and a CUDA elementwise kernel computes each op alone.
The one place CUDA fuses is inside ``add``/``sub``, which it computes as ``a + alpha * b``
(nvcc contracts that into one FMA); with ``alpha = +-1``, all the arithmetic module ever
passes, the product is exact and the FMA is the plain sum. Conversions to bf16/fp16 round to
nearest even on both devices. So single edits, task arithmetic and soups must match byte for byte.

TIES tolerance, 1 ulp of the stored dtype: on the GPU TIES runs its torch formulation
(``ties_task_vector``, then ``tau * lambda + theta_0``), not the CPU kernel's loop. Both do the
same float32 operations in the same order (trim by comparison, the sign of the task-ordered
sum, the task-ordered sum of the agreeing values divided by their integer count), and the
bytes are expected to match. The one step whose exactness rests on a build setting rather
than on the operations is the division of the mean: CUDA's ``div`` is correctly rounded
because PyTorch is not built with fast math. A division one rounding off moves tau by at most
1 ulp of float32, which after ``* lambda + theta_0`` and the rounding to the stored dtype moves
the output by at most 1 ulp of that dtype: the test allows that, and reports how many values
differ at all.
"""
from __future__ import annotations

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import transformers as tf  # noqa: E402

from hf_lines import LinesMerger  # noqa: E402
from hf_lines.core import kernels  # noqa: E402
from hf_lines.core.methods.arithmetic import lines_edit, weighted_sum_edit  # noqa: E402
from hf_lines.pipeline import device as device_module  # noqa: E402
from hf_lines.pipeline.device import CudaTransfer  # noqa: E402
from hf_lines.pipeline.executor import compute_device  # noqa: E402

CUDA = torch.device("cuda")
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
TIES_ULP_TOLERANCE = 1


# ----------------------------------------------------------------------------- helpers
def weight_files(folder: Path) -> dict[str, bytes]:
    """The bytes of every weights file and the shard index."""
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))
    assert files, f"no weights in {folder}"
    return {f.name: f.read_bytes() for f in files}


def load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def ordered_bits(t: torch.Tensor) -> torch.Tensor:
    """Integers in the order of the floats (+0 and -0 equal): their difference counts ulps."""
    ints = {2: torch.int16, 4: torch.int32}[t.element_size()]
    i = t.contiguous().view(ints).to(torch.int64)
    magnitude = i & ((1 << (8 * t.element_size() - 1)) - 1)
    return torch.where(i < 0, -magnitude, magnitude)


def ulp_differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(values whose bits differ, the largest distance in ulps, values compared) over two state dicts."""
    assert a.keys() == b.keys()
    differ = worst = total = 0
    for name in a:
        x, y = a[name].contiguous(), b[name].contiguous()
        assert x.dtype == y.dtype and x.shape == y.shape, name
        total += x.numel()
        if not x.is_floating_point():
            assert torch.equal(x, y), name
            continue
        ints = {2: torch.int16, 4: torch.int32}[x.element_size()]
        differ += int((x.view(ints) != y.view(ints)).sum())
        if x.numel():
            worst = max(worst, int((ordered_bits(x) - ordered_bits(y)).abs().max()))
    return differ, worst, total


def save_both(make: Callable[[], LinesMerger], tmp_path: Path, **options: Any) -> tuple[Path, Path]:
    """The same merge written by the CPU path and by the CUDA path, each by a fresh merger (its own statistics)."""
    on_cpu, on_gpu = make(), make()
    cpu = on_cpu.save_pretrained(tmp_path / "cpu", progress=False, **options)
    gpu = on_gpu.save_pretrained(tmp_path / "cuda", progress=False, device="cuda", **options)
    assert on_gpu.tensor_norms.keys() == on_cpu.tensor_norms.keys()
    for name, (before, after) in on_cpu.tensor_norms.items():
        # The card's numbers, not the weights. ||out - theta_0||: the torch path's vector_norm returns the
        # stored dtype. ||tau||: the CPU kernels measure tau itself, the torch path takes ||out - theta_0|| / lambda,
        # and the output's rounding to 16 bits moves that by a few percent where lambda * tau is small.
        wide = (on_cpu.dtype or on_cpu.base.checkpoint.info(name).dtype) == torch.float32
        gpu_before, gpu_after = on_gpu.tensor_norms[name]
        assert gpu_after == pytest.approx(after, rel=1e-4 if wide else 1e-2, abs=1e-12), name
        assert gpu_before == pytest.approx(before, rel=1e-3 if wide else 0.1, abs=1e-12), name
    return cpu, gpu


def assert_same_outputs(cpu: Path, gpu: Path) -> None:
    a, b = weight_files(cpu), weight_files(gpu)
    assert a.keys() == b.keys()
    different = [n for n in a if a[n] != b[n]]
    if different:
        differ, worst, total = ulp_differences(load(cpu), load(gpu))
        pytest.fail(f"{different} differ: {differ} of {total} values, up to {worst} ulp")
    assert (cpu / "hf_lines.json").read_bytes() == (gpu / "hf_lines.json").read_bytes()


# ----------------------------------------------------------------------------- transfers
def test_transfer_round_trip_in_pinned_chunks():
    transfer = CudaTransfer(CUDA, chunk_bytes=4096)
    g = torch.Generator().manual_seed(0)
    for t in [torch.randn(12_345, generator=g).to(torch.bfloat16), torch.randn(3, 1000, generator=g),
              torch.randn(257, generator=g).half(), torch.tensor(2.5), torch.empty(0, 7), torch.arange(999)]:
        with transfer.computing():
            dev = transfer.upload(t)
            assert dev.device.type == "cuda" and torch.equal(dev.cpu(), t)
            back = transfer.download(dev * 1 if dev.is_floating_point() else dev)
        assert back.device.type == "cpu" and back.dtype == t.dtype and torch.equal(back, t)
    slots = [s for s in transfer._slots if s is not None]
    assert len(slots) == 2 and all(s.is_pinned() and s.numel() == 4096 for s in slots)  # recycled, not per tensor


def test_download_into_a_given_buffer():
    transfer = CudaTransfer(CUDA, chunk_bytes=1024)
    t = torch.randn(5000, device=CUDA)
    out = torch.empty(5000)
    assert transfer.download(t, out) is out and torch.equal(out, t.cpu())


# ----------------------------------------------------------------------------- the arithmetic itself
def _inputs(dtype, shape, tasks, seed):
    g = torch.Generator().manual_seed(seed)
    base32 = torch.randn(shape, generator=g) * 0.02
    base32.view(-1)[::11] = -0.0
    models = []
    for t in range(tasks):
        m = base32 + 0.02 * 10 ** -(1 + t % 4) * torch.randn(shape, generator=g)
        m.view(-1)[5::13] = base32.view(-1)[5::13]
        models.append(m.to(dtype))
    return base32.to(dtype), models


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tasks", [1, 2, 3, 5])
def test_edit_ops_same_bytes_on_cuda(dtype, tasks):
    base, models = _inputs(dtype, (70_001,), tasks, seed=tasks)
    weights = [1.0, 0.37, 0.8, 1.3, 0.5][:tasks]
    for scale in [0.0, 1.0, 0.5, 0.49999, 0.7, -0.3, 2.5, 0.123]:
        cpu = weighted_sum_edit(base, models, weights, scale)
        gpu = weighted_sum_edit(base.to(CUDA), [m.to(CUDA) for m in models], weights, scale).cpu()
        assert torch.equal(cpu.view(torch.uint8), gpu.view(torch.uint8)), (scale, ulp_differences({"w": cpu}, {"w": gpu}))
        if kernels.available():
            fused = kernels.weighted_sum_edit(base, models, weights, scale)
            assert fused is not None and torch.equal(fused[0].view(torch.uint8), gpu.view(torch.uint8)), scale


def test_edit_of_a_tensor_larger_than_the_device_chunk():
    base, (m,) = _inputs(torch.bfloat16, ((1 << 24) + 1001,), 1, seed=3)  # two of the GPU path's 16 M-entry chunks
    for scale in (0.3, 0.8):
        cpu = lines_edit(base, m, scale)
        gpu = lines_edit(base.to(CUDA), m.to(CUDA), scale).cpu()
        assert torch.equal(cpu.view(torch.uint8), gpu.view(torch.uint8)), scale


# ----------------------------------------------------------------------------- whole runs
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_models", [1, 2, 3])
def test_same_bytes_as_cpu(family_models, tmp_path, dtype, n_models):
    base, fts = family_models("llama", n_models, dtype, max_shard_size="30KB")
    if n_models == 1:  # a LiNeS edit: lambda from 0.2 to 1.0, both sides of the 0.5 branch and the exact end
        options = {"alpha": 0.2, "beta": 0.8}
    else:
        options = {"alpha": 0.3, "beta": 0.6, "weights": [1.0, 0.7, 1.2][:n_models]}
    merger = lambda: LinesMerger.from_pretrained(base, fts, **options)  # noqa: E731
    assert_same_outputs(*save_both(merger, tmp_path, max_shard_size="20KB", workers=2))


def test_same_bytes_with_small_staging_chunks(family_models, tmp_path, monkeypatch):
    """Every tensor crosses in several chunks: the double-buffered copies keep their order."""
    monkeypatch.setattr(device_module, "CHUNK_BYTES", 512)
    base, fts = family_models("llama", 2, torch.bfloat16)
    merger = lambda: LinesMerger.from_pretrained(base, fts, alpha=0.4, beta=0.5)  # noqa: E731
    assert_same_outputs(*save_both(merger, tmp_path, workers=3))


@pytest.mark.parametrize("method, options, kwargs", [
    ("soup", {}, {"alpha": 0.5, "beta": 0.5}),
    ("wise_ft", {"gamma": 0.7}, {"alpha": 1.0, "beta": 0.0}),
    ("mean", {}, {"alpha": 0.6, "beta": 0.3, "dtype": "float32"}),  # the unfused CPU path: a wider output dtype
])
def test_soups_same_bytes(family_models, tmp_path, method, options, kwargs):
    base, fts = family_models("llama", 3, torch.bfloat16)
    merger = lambda: LinesMerger.from_pretrained(base, fts, method=method, **kwargs, **options)  # noqa: E731
    assert_same_outputs(*save_both(merger, tmp_path))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("method, options", [
    ("ties", {}),  # global trim, zero_sign model: the defaults
    ("ties", {"trim": "tensor", "density": 0.3, "zero_sign": "tensor"}),  # thresholds found on the device
    ("ties", {"zero_sign": "tensor", "aggregate": "sum"}),
    ("consensus", {}),
])
def test_ties_within_tolerance(family_models, tmp_path, dtype, method, options):
    base, fts = family_models("llama", 3, dtype)
    merger = lambda: LinesMerger.from_pretrained(base, fts, method=method, alpha=0.5, beta=0.5, **options)  # noqa: E731
    cpu, gpu = save_both(merger, tmp_path)
    differ, worst, total = ulp_differences(load(cpu), load(gpu))
    print(f"{method} {options} {dtype}: {differ} of {total} values differ, up to {worst} ulp")
    assert worst <= TIES_ULP_TOLERANCE, (differ, worst)


def test_dare_computes_on_the_cpu(family_models, tmp_path):
    """DARE's masks come from CPU generators: such a merge warns and gives the CPU's bytes."""
    base, fts = family_models("llama", 2, torch.bfloat16)
    merger = lambda: LinesMerger.from_pretrained(base, fts, method="dare_linear", alpha=0.5, beta=0.5,  # noqa: E731
                                                 dare={"drop_rate": 0.5, "seed": 1})
    with pytest.warns(RuntimeWarning, match="computes on the CPU"):
        cpu, gpu = save_both(merger, tmp_path)
    assert_same_outputs(cpu, gpu)


def test_auto_device_is_cuda(family_models, tmp_path):
    assert compute_device("auto").type == "cuda"
    base, fts = family_models("llama", 1, torch.bfloat16)
    merger = LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5)
    cpu = merger.save_pretrained(tmp_path / "cpu", progress=False)
    auto = merger.save_pretrained(tmp_path / "auto", progress=False, device="auto")
    assert_same_outputs(cpu, auto)


def test_cli_device_cuda(family_models, tmp_path):
    from hf_lines.cli import main

    base, (ft,) = family_models("llama", 1, torch.float16)
    cpu = LinesMerger.from_pretrained(base, [ft], alpha=0.3, beta=0.4).save_pretrained(tmp_path / "cpu", progress=False)
    rc = main(["scale", str(base), str(ft), "-o", str(tmp_path / "gpu"), "--alpha", "0.3", "--beta", "0.4",
               "--device", "cuda", "-q"])
    assert rc == 0
    assert_same_outputs(cpu, tmp_path / "gpu")


# ----------------------------------------------------------------------------- memory
@pytest.fixture(scope="module")
def deep_models(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 16-block model (no tensor more than 1/40 of it) and two fine-tunes, bf16."""
    root = tmp_path_factory.mktemp("deep")
    config = tf.LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=16,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                            tie_word_embeddings=False)
    folders = []
    for k in range(3):
        torch.manual_seed(0)
        model = tf.LlamaForCausalLM(config).to(torch.bfloat16)
        if k:
            g = torch.Generator().manual_seed(k)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_((torch.randn(p.shape, generator=g) * 1e-3).to(p.dtype))
        model.save_pretrained(root / f"m{k}")
        folders.append(root / f"m{k}")
    return folders[0], folders[1:]


def test_device_memory_is_a_few_tensors_not_the_model(deep_models, tmp_path):
    base, fts = deep_models
    merger = LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5)
    infos = [merger.base.checkpoint.info(n) for n in merger.base.checkpoint.names()]
    largest = max(i.nbytes for i in infos)
    inputs = sum(i.nbytes for i in infos) * (1 + len(fts))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    merger.save_pretrained(tmp_path / "out", progress=False, device="cuda", workers=1)
    peak = torch.cuda.max_memory_allocated() - before
    # one tensor in flight: 3 inputs + the output, float32 theta_0, sum and delta (2x bf16 each), the norm's
    # difference; and the allocator's 512-byte rounding of the small tensors
    bound = 12 * largest + (64 << 10)
    print(f"peak device memory {peak} B; largest tensor {largest} B; all inputs {inputs} B")
    assert peak <= bound
    assert bound < inputs / 4  # so the bound means something
    assert torch.cuda.memory_allocated() - before <= 4096  # nothing kept after the run
