import pytest

from hf_lines import block_scale, block_scales, single_task


def test_formula_matches_paper():
    # lambda(i) = alpha + beta * i / (L - 1), exactly.
    L, alpha, beta = 12, 0.3, 0.6
    for i in range(L):
        assert block_scale(i, L, alpha, beta) == pytest.approx(alpha + beta * i / (L - 1), abs=1e-15)
    s = block_scales(L, alpha, beta)
    assert s[0] == pytest.approx(alpha) and s[-1] == pytest.approx(alpha + beta)


def test_single_task_form_keeps_last_block():
    alpha, beta = single_task(0.25)
    assert (alpha, beta) == (0.25, 0.75)
    assert block_scale(9, 10, alpha, beta) == pytest.approx(1.0)


def test_one_block_and_bad_index():
    assert block_scale(0, 1, 0.2, 0.5) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        block_scale(3, 3, 0.1, 0.1)
    with pytest.raises(ValueError):
        block_scale(0, 0, 0.1, 0.1)
