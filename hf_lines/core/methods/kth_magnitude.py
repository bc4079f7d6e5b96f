"""The exact k-th largest magnitude of a stream of tensors, in bounded memory: TIES' global threshold.

TIES as the paper's code runs it flattens a whole task vector into one array and keeps
the entries with ``|tau| >= kthvalue(|tau|, d - int(d * density))`` (``d`` entries in all):
the threshold is the r-th largest magnitude with ``r = int(d * density) + 1``, and
every entry equal to it survives. Here the array is never built; ``KthMagnitude``
finds the same threshold, bit for bit, from a stream of slices.

Algorithm: radix selection on float32 bit patterns.
    Non-negative float32 values order exactly like their bit patterns read as integers,
    so ``key = bits >> shift`` buckets magnitudes into ``2**(31 - shift)`` ordered bins
    without losing order, and the bin ``key`` holds the values in
    ``[key << shift, (key + 1) << shift)`` (as bit patterns).

    Pass 1 (the statistics pass), per task: ``counts[key]`` (how many magnitudes fall in
    each bin) and ``inexact[key]`` (how many of those have nonzero low ``shift`` bits,
    i.e. lie strictly above the bin's floor value ``key << shift``). Both are
    ``torch.bincount`` of the slice, so memory is two fixed int64 arrays whatever the
    model's size. At the end, walking the bins from the top
    finds the bin ``b`` holding rank r and the rank ``q`` inside it. Largest first, the bin
    holds its ``inexact[b]`` values above the floor, then ``counts[b] - inexact[b]``
    copies of the floor itself. So if ``q > inexact[b]`` the threshold is the floor:
    exact, and no further reading is needed.

    That is the usual case for bfloat16 checkpoints: the default ``shift = 16`` keeps
    bfloat16's 7 mantissa bits in the key, and by Sterbenz' lemma the difference of two
    bfloat16 numbers within a factor 2 of each other (a fine-tuned weight and its
    pre-trained value) is itself a bfloat16 number, so its low 16 bits are zero and
    every bin holds a single value. Memory: two int64 arrays of 2**15 bins, 0.5 MB per
    task.

    Pass 2 (only when ``q <= inexact[b]``, typically float32 and float16 checkpoints): a histogram
    of the low ``shift`` bits of the magnitudes whose key is ``b`` (``2**shift`` bins)
    gives the q-th largest of them, hence all 32 bits of the threshold. No candidate
    values are ever stored, so memory stays bounded in the worst case too.

The result equals ``torch.kthvalue`` on the concatenated magnitudes (the tests check the
surviving entries against it).
"""
from __future__ import annotations

import threading

import torch

# The positive-float32 key space is 31 bits wide (the sign bit of |x| is 0).
_MAG_BITS = 31
# Pass-1 keys keep the exponent and 7 mantissa bits: bfloat16's precision. (13 would cover float16's 10
# bits too, but its 8x larger histogram makes pass 1 ~1.7x slower; float16 inputs take pass 2 instead.)
DEFAULT_SHIFT = 16


def magnitude_bits(values: torch.Tensor) -> torch.Tensor:
    """int32 bit patterns of |values| (float32), ordered like the magnitudes.

    Args:
        values: float32 tensor, any shape.
    """
    return values.abs().reshape(-1).view(torch.int32)


def rank_from_top(counts: torch.Tensor, rank: int) -> tuple[int, int]:
    """(bin, rank inside it) of the ``rank``-th largest element given per-bin counts (1-based ranks).

    Args:
        counts: int64 histogram, bins in increasing order of value.
        rank: 1-based rank from the largest; must not exceed ``counts.sum()``.
    """
    above = torch.cumsum(counts.flip(0), 0)  # above[i]: elements in the top i + 1 bins
    top_bins = int(torch.searchsorted(above, torch.tensor(rank, dtype=above.dtype)))
    b = counts.numel() - 1 - top_bins
    before = int(above[top_bins - 1]) if top_bins else 0
    return b, rank - before


def kept_count(total: int, density: float) -> int:
    """How many entries TIES keeps before ties: int(total * density), the paper's ``topk_values_mask``.

    Args:
        total: number of entries.
        density: fraction to keep, in (0, 1].
    """
    return int(total * density)


class KthMagnitude:
    """Streaming exact threshold ``|x| >= threshold`` keeping the top ``density`` fraction, paper convention.

    Feed every slice to ``add`` (from any number of threads), call ``finish``; when it
    returns True, feed the very same values again and call ``finish`` once more.
    ``threshold`` is then exact (0.0 when nothing is trimmed).
    """

    def __init__(self, density: float, shift: int = DEFAULT_SHIFT):
        if not 0.0 < density <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {density}")
        if not 0 < shift < _MAG_BITS:
            raise ValueError(f"shift must be in 1..30, got {shift}")
        self.density = float(density)
        self.shift = shift
        self.total = 0
        self.counts = torch.zeros(1 << (_MAG_BITS - shift), dtype=torch.int64)
        self.inexact = torch.zeros_like(self.counts)
        self.low_counts: torch.Tensor | None = None
        self.threshold: float | None = None
        self._bin = -1
        self._rank_in_bin = 0
        self._lock = threading.Lock()

    @property
    def needs_values(self) -> bool:
        return self.threshold is None

    def add(self, values: torch.Tensor) -> None:
        """Count one slice (float32; any shape) in the current pass."""
        if self.threshold is not None:
            raise RuntimeError("threshold already known")
        bits = magnitude_bits(values)
        keys = bits >> self.shift
        low_mask = (1 << self.shift) - 1
        if self.low_counts is None:
            counts = torch.bincount(keys, minlength=self.counts.numel())
            inexact = torch.bincount(keys[(bits & low_mask) != 0], minlength=self.counts.numel())
            with self._lock:
                self.counts += counts
                self.inexact += inexact
                self.total += bits.numel()
        else:
            low = torch.bincount(bits[keys == self._bin] & low_mask, minlength=1 << self.shift)
            with self._lock:
                self.low_counts += low

    def add_histogram(self, counts: torch.Tensor, inexact: torch.Tensor | None = None, low: torch.Tensor | None = None) -> None:
        """Count values that were histogrammed elsewhere (the fused kernels), in the current pass.

        Pass 1 takes ``counts`` and ``inexact`` over this tracker's bins (``bits >> shift``);
        pass 2 takes ``low``, the histogram of the low bits inside ``bin_to_refine``.
        """
        if self.threshold is not None:
            raise RuntimeError("threshold already known")
        with self._lock:
            if self.low_counts is None:
                self.counts += counts
                self.inexact += inexact
                self.total += int(counts.sum())
            else:
                self.low_counts += low

    @property
    def bin_to_refine(self) -> int | None:
        """The bin whose low bits pass 2 histograms (None in pass 1)."""
        return self._bin if self.low_counts is not None else None

    def finish(self) -> bool:
        """End a pass; True when one more pass over the same values is needed."""
        if self.low_counts is None:
            keep = kept_count(self.total, self.density)
            if self.total == 0 or keep >= self.total:
                self.threshold = 0.0  # nothing trimmed, as the paper's code for density 1
                return False
            rank = keep + 1
            b, q = rank_from_top(self.counts, rank)
            if q > int(self.inexact[b]):
                self.threshold = _from_bits(b << self.shift)
                return False
            self._bin, self._rank_in_bin = b, q
            self.low_counts = torch.zeros(1 << self.shift, dtype=torch.int64)
            return True
        low, q = rank_from_top(self.low_counts, self._rank_in_bin)
        assert q >= 1 and low > 0, "second pass saw different values than the first"
        self.threshold = _from_bits((self._bin << self.shift) | low)
        self.low_counts = None
        return False


def _from_bits(bits: int) -> float:
    """The float32 value with this bit pattern, as a Python float (exact)."""
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32)[0])


def magnitude_threshold(values: torch.Tensor, density: float) -> float:
    """In-memory threshold with the same convention: kthvalue(|x|, n - int(n * density)), 0.0 if nothing is trimmed.

    Args:
        values: float32 tensor (flattened here).
        density: fraction of entries to keep, in (0, 1].
    """
    mags = values.abs().reshape(-1)
    n = mags.numel()
    k = n - kept_count(n, density)
    if n == 0 or k <= 0:
        return 0.0
    return float(torch.kthvalue(mags, k).values)
