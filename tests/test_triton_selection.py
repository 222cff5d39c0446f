"""The Triton top-p kernel against the reference rule (svg2_core.selection.top_p_mask): crossing cluster
kept, floor, ties to the lower index, padding lanes of a non-power-of-two row, rows of any length."""
import pytest
import torch

from triton_helpers import DEVICE

from svg2_core.selection import top_p_mask as reference_top_p_mask
from svg2_core.triton_kernels.selection import MAX_KEY_CLUSTERS, top_p_mask


def _exact_rows(num_rows, num_cols, generator, distinct=1 << 10):
    """Probabilities that are multiples of 2^-20 (from a small set of values, so many exact ties) whose
    partial sums are exact in fp32: both implementations then see the same cumulative masses."""
    weights = torch.randint(0, distinct, (num_rows, num_cols), generator=generator).double()
    weights[:, 0] += 1  # no all-zero row
    quantised = torch.floor(weights / weights.sum(-1, keepdim=True) * 2 ** 20)
    quantised[:, 0] += 2 ** 20 - quantised.sum(-1)
    return (quantised / 2 ** 20).float()


def test_hand_cases_match_the_reference_rule():
    probabilities = torch.tensor([[0.1, 0.4, 0.3, 0.2], [0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]],
                                 device=DEVICE)
    assert top_p_mask(probabilities, 0.5, 1).tolist() == [[False, True, True, False], [True, False, False, False],
                                                         [True, True, False, False]]
    assert top_p_mask(probabilities, 0.85, 1)[0].tolist() == [False, True, True, True]
    assert top_p_mask(probabilities, 0.5, 3)[1].tolist() == [True, True, True, False]  # floor, ties -> lower
    assert top_p_mask(probabilities, 0.6, 1)[2].tolist() == [True, True, True, False]
    assert top_p_mask(probabilities, 1.0, 1).all()


# the interpreter sorts a 1024-lane row in about a second: long rows get few of them
@pytest.mark.parametrize("num_rows, num_cols, top_p, min_kept, distinct", [
    (12, 5, 0.3, 1, 1024), (12, 37, 0.75, 4, 16), (12, 37, 0.95, 2, 3), (4, 300, 0.75, 4, 16),
    (4, 300, 0.3, 1, 1024), (2, 1000, 0.95, 2, 3)])
def test_random_rows_match_the_reference(num_rows, num_cols, top_p, min_kept, distinct):
    generator = torch.Generator().manual_seed(num_cols)
    probabilities = _exact_rows(num_rows, num_cols, generator, distinct).view(num_rows // 2, 2, num_cols)
    expected = reference_top_p_mask(probabilities, top_p, min_kept)
    got = top_p_mask(probabilities.to(DEVICE), top_p, min_kept)
    assert got.shape == probabilities.shape and got.dtype == torch.bool
    assert torch.equal(got.cpu(), expected)
    assert 0 < int(expected.sum()) < expected.numel()  # the case selects something and drops something


def test_too_many_key_clusters_is_refused_with_the_limit():
    with pytest.raises(ValueError, match=str(MAX_KEY_CLUSTERS)):
        top_p_mask(torch.zeros(1, MAX_KEY_CLUSTERS + 1, device=DEVICE), 0.5, 1)


@pytest.mark.parametrize("num_k_clusters", [40, MAX_KEY_CLUSTERS + 1])
def test_backend_block_map_matches_the_reference(num_k_clusters):
    """TritonBackend.select_blocks: the kernel up to MAX_KEY_CLUSTERS key clusters, the reference above."""
    from svg2_core.selection import select_blocks
    from svg2_core.triton_backend import TritonBackend

    generator = torch.Generator().manual_seed(3)
    q_centroids = torch.randn(2, 3, 16, generator=generator)
    k_centroids = torch.randn(2, num_k_clusters, 16, generator=generator)
    sizes = torch.randint(0, 5, (2, num_k_clusters), generator=generator, dtype=torch.int32)
    inputs = [x.to(DEVICE) for x in (q_centroids, k_centroids, sizes)]
    expected = select_blocks(*inputs, 0.7, 2, 0.25)
    got = TritonBackend().select_blocks(*inputs, 0.7, 2, 0.25)
    assert got.shape == expected.shape and torch.equal(got, expected)
    assert 0 < int(got.sum()) < got.numel()
