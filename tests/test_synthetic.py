"""The structured generator: shapes, determinism, and that each knob makes the structure it claims."""
import torch

from svg2_core.synthetic import MODEL_SHAPES, _object_ids, structured_qkv


def test_shapes_dtype_and_seed():
    q, k, v = structured_qkv(2, 3, (2, 4, 6), 32, dense_suffix=5, dtype=torch.float16, seed=3)
    assert q.shape == k.shape == v.shape == (2, 3, 53, 32) and q.dtype == torch.float16
    again, _, _ = structured_qkv(2, 3, (2, 4, 6), 32, dense_suffix=5, dtype=torch.float16, seed=3)
    assert torch.equal(q, again)


def test_named_shapes_match_the_models():
    tokens = {name: frames * rows * cols + suffix for name, (_, _, (frames, rows, cols), _, suffix)
              in MODEL_SHAPES.items()}
    assert tokens["wan21-14b-720p"] == 75600 and tokens["wan21-1.3b-480p"] == 32760
    assert tokens["hunyuan-720p"] == 118800 + 256


def _mean_logit(q, k, pairs):
    return float((q[pairs[0]] * k[pairs[1]]).sum(-1).mean())


def test_locality_makes_neighbours_attend_each_other():
    q, k, _ = structured_qkv(1, 1, (4, 16, 16), 64, locality=1.0, semantic=0.0, noise=0.0, dtype=torch.float32)
    q, k = q[0, 0], k[0, 0]
    index = torch.arange(1024).view(4, 16, 16)
    near = (index[:, :, :-1].reshape(-1), index[:, :, 1:].reshape(-1))
    far = (index[:2, :8, :8].reshape(-1), index[2:, 8:, 8:].reshape(-1))
    assert _mean_logit(q, k, near) > 4 * abs(_mean_logit(q, k, far))


def test_objects_move_across_frames():
    ids = _object_ids((6, 20, 20), 3, torch.Generator().manual_seed(1)).view(6, 20, 20)
    assert ids.max() > 0 and not torch.equal(ids[0], ids[-1])


def test_semantic_makes_one_object_attend_itself_anywhere():
    grid = (4, 16, 16)
    q, k, _ = structured_qkv(1, 1, grid, 64, locality=0.0, semantic=1.0, noise=0.0, dtype=torch.float32, seed=5)
    q, k = q[0, 0], k[0, 0]
    same = (q.unsqueeze(0) == q.unsqueeze(1)).all(-1)  # without noise, one object's tokens share one vector
    assert 1024 < int(same.sum()) < 1024 * 1024 / 2
    logits = q @ k.T
    assert float(logits[same].mean()) > float(logits[~same].mean()) + 1.0


def test_peakedness_sharpens_attention():
    flat, _, _ = structured_qkv(1, 1, (2, 8, 8), 64, peakedness=1.0, dtype=torch.float32)
    peaked, _, _ = structured_qkv(1, 1, (2, 8, 8), 64, peakedness=8.0, dtype=torch.float32)
    assert float(peaked.norm()) > 2.5 * float(flat.norm())
