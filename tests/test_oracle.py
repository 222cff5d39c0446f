"""The oracle itself, on cases small enough to write out by hand."""
import pytest
import torch

from oracle import element_mask, masked_attention, plan_mask, relative_error
from svg2_core.backends import ClusterPlan


def test_element_mask_of_a_hand_case_with_dense_tokens():
    # one dense prefix and one dense suffix token around three clustered ones; key 1 is marked dense by -1
    q_labels = torch.tensor([[1, 0, 1]])
    k_labels = torch.tensor([[0, -1, 1]])
    block_mask = torch.tensor([[[False, True], [True, False]]])
    t, f = True, False
    expected = torch.tensor([[
        [t, t, t, t, t],  # dense prefix query
        [t, t, t, f, t],  # cluster 1: keys of cluster 0, the dense key, the dense tokens
        [t, f, t, t, t],  # cluster 0: keys of cluster 1
        [t, t, t, f, t],
        [t, t, t, t, t],  # dense suffix query
    ]])
    assert torch.equal(element_mask(q_labels, k_labels, block_mask, dense_prefix=1, dense_suffix=1), expected)
    rows = torch.tensor([2, 0])
    assert torch.equal(element_mask(q_labels, k_labels, block_mask, 1, 1, rows=rows), expected[:, rows])


def test_plan_mask_checks_the_token_count():
    plan = ClusterPlan(torch.tensor([[0, 1]], dtype=torch.int32), torch.tensor([[1, 0]], dtype=torch.int32),
                       torch.tensor([[1, 1]], dtype=torch.int32), torch.tensor([[1, 1]], dtype=torch.int32),
                       torch.eye(2, dtype=torch.bool)[None], 2, 1)
    mask = plan_mask(plan, 5)
    assert mask.shape == (1, 5, 5) and mask[0, 2].tolist() == [True, True, False, True, True]
    with pytest.raises(ValueError, match="num_tokens=4"):
        plan_mask(plan, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_attention_with_a_full_mask_is_dense_attention(dtype):
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 24, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    dense = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    out = masked_attention(q, k, v, torch.ones(2, 3, 24, 24, dtype=torch.bool), dtype=dtype)
    assert out.dtype == dtype
    assert relative_error(out, dense) < (1e-12 if dtype == torch.float64 else 1e-6)


def test_masked_attention_masks_and_low_precision_rounds():
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 16, 8, generator=generator) for _ in range(3))
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[0, :, 3] = True
    mask[0, 5] = False  # a row with no allowed key gives 0
    out = masked_attention(q, k, v, mask, dtype=torch.float64)
    assert torch.allclose(out[0, 0], v[0, 3].double()) and (out[0, 5] == 0).all()
    mask[0, :, :8] = True
    exact = masked_attention(q, k, v, mask, 0.3)
    lowp = masked_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, 0.3, low_precision=True)
    assert lowp.dtype == torch.float32 and 1e-4 < relative_error(lowp, exact) < 2e-2
    with pytest.raises(ValueError, match="torch.float16"):
        masked_attention(q, k, v, mask, dtype=torch.float16)
