"""The Triton k-means kernels against the reference: near-optimal assignment (bf16 dot products may flip
near-ties only), exact means for given labels, empty clusters keeping their centroid."""
import pytest
import torch
import triton

from triton_helpers import DEVICE

from svg2_core.kmeans import kmeans_objective, kmeans_torch
from svg2_core.kmeans import update_centroids as update_centroids_torch
from svg2_core.triton_backend import TritonBackend
from svg2_core.triton_kernels import kmeans as kmeans_kernels
from svg2_core.triton_kernels.kmeans import (FP8_CENTROID_RANGE, Fp8Frame, assign_operands, assign_to_nearest,
                                            fp8_frame, points_to_fp8, sort_by_label, update_centroids)


def _points(num_problems, num_points, head_dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centers = torch.randn(num_problems, 12, head_dim, generator=generator) * 3
    member = torch.randint(0, 12, (num_problems, num_points), generator=generator)
    points = centers.gather(1, member.unsqueeze(-1).expand(-1, -1, head_dim))
    points = points + torch.randn(num_problems, num_points, head_dim, generator=generator)
    return points.to(DEVICE, dtype)


@pytest.mark.parametrize("dtype, head_dim", [(torch.bfloat16, 128), (torch.float16, 64)])
def test_assignment_is_nearest_up_to_low_precision_rounding(dtype, head_dim):
    points = _points(2, 200, head_dim, dtype)
    centroids = points[:, :40].float() + 0.1
    labels = assign_to_nearest(points, centroids)
    distances = torch.cdist(points.double(), centroids.double()).square()  # [G, N, C]
    chosen = distances.gather(2, labels.long().unsqueeze(-1)).squeeze(-1)
    best = distances.min(-1).values
    # the dot products round centroids to the points' dtype: allow that rounding's effect on ||x - c||^2
    eps = 2 * torch.finfo(dtype).eps * (points.double().norm(dim=-1) * centroids.double().norm(dim=-1).max(-1,
                                        keepdim=True).values)
    assert labels.dtype == torch.int32
    assert torch.all(chosen - best <= 2 * eps)
    assert (labels.long() == distances.argmin(-1)).float().mean() > 0.97


def _tied_centroids(points, num_clusters):
    """Each centroid twice (copy i + ceil(C / 2) of centroid i): exact ties, which the first copy must win."""
    distinct = points[:, :(num_clusters + 1) // 2].float() + 0.1
    return torch.cat([distinct, distinct], dim=1)[:, :num_clusters]


def _integer_points_and_tied_centroids(num_points, num_clusters, seed):
    """Coordinates in -2..2 at head dim 64: every product, norm and distance is a small integer, exact in bf16 /
    fp32 whatever the order of the sums (CPU, BLAS or GPU), so ties are exact ties. Centroids come twice (copy
    i + ceil(C / 2) of centroid i, often in another tile), and distinct ones tie often too."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randint(-2, 3, (2, num_points, 64), generator=generator).float()
    distinct = torch.randint(-2, 3, (2, (num_clusters + 1) // 2, 64), generator=generator).float()
    centroids = torch.cat([distinct, distinct], dim=1)[:, :num_clusters]
    return points.to(DEVICE, torch.bfloat16), centroids.to(DEVICE)


@pytest.mark.parametrize("num_clusters", [40, 64, 150, 200])  # under, at, between and at a multiple of the tile
def test_assignment_is_the_first_nearest_centroid_on_exact_ties(num_clusters):
    """The slots arg-min over padded centroid tiles (no bounds checks) gives exactly the fp64 first arg-min:
    the lower index wins a tie within a tile and the earlier tile across tiles, and no padding centroid is
    ever chosen (distances <= 64 x 16 = 2^10 are far apart next to the 2^-7 the codes take)."""
    points, centroids = _integer_points_and_tied_centroids(300, num_clusters, seed=num_clusters)
    labels = assign_to_nearest(points, centroids)
    distances = (points.double()[:, :, None, :] - centroids.double()[:, None, :, :]).square().sum(-1)
    best = distances.min(-1, keepdim=True).values
    first_nearest = (distances == best).int().argmax(-1)  # the lowest index among the exact minimums
    assert torch.equal(labels.long(), first_nearest)
    assert labels.max() < (num_clusters + 1) // 2  # every tie with a copy went to the first copy
    assert ((distances == best).sum(-1) > 2).any()  # ties between distinct centroids happen too


def test_assign_configs_are_pruned_to_tiles_that_divide_the_padded_centroids():
    configs = [triton.Config({"BLOCK_N": 128, "BLOCK_C": block_c}) for block_c in (64, 128, 256)]
    prune = kmeans_kernels._configs_that_tile_the_centroids
    assert [c.kwargs["BLOCK_C"] for c in prune(configs, {"padded_clusters": 192})] == [64]
    assert [c.kwargs["BLOCK_C"] for c in prune(configs, {"padded_clusters": 256})] == [64, 128, 256]


@pytest.mark.parametrize("num_clusters", [1, 63, 300, 1000])
def test_slot_codes_name_every_centroid_across_tiles(num_clusters):
    """Each point a copy of one centroid (a permutation; nothing else near it): the slots decode tile, pair
    and member back to that centroid's index, in the first, a middle and the last (partly padded) tile."""
    generator = torch.Generator().manual_seed(num_clusters)
    centroids = torch.randn(1, num_clusters, 64, generator=generator) * 4
    order = torch.randperm(num_clusters, generator=generator)[:min(num_clusters, 300)]
    points = centroids[:, order].to(DEVICE, torch.bfloat16)
    labels = assign_to_nearest(points, centroids.to(DEVICE))
    assert torch.equal(labels[0].long().cpu(), order)


def test_fp8_points_need_their_frame():
    points = _points(1, 10, 64, torch.bfloat16)
    fp8_points = points_to_fp8(points, fp8_frame(points.float()))
    with pytest.raises(ValueError, match="float8 points need the Fp8Frame"):
        assign_to_nearest(fp8_points, points.float())


def test_nan_points_get_labels_in_range():
    points = _points(1, 100, 64, torch.bfloat16)
    points[0, :10] = float("nan")
    labels = assign_to_nearest(points, points[:, 20:90].float())
    assert labels.min() >= 0 and labels.max() < 70


def test_assign_operands_pad_centroids_that_are_never_nearest():
    centroids = torch.randn(3, 70, 64, device=DEVICE)
    centroids_low, sq_norms = assign_operands(centroids, torch.bfloat16)
    assert centroids_low.shape == (3, 128, 64) and sq_norms.shape == (3, 128)  # 70 -> two 64-centroid tiles
    assert torch.equal(centroids_low[:, :70], (centroids * -2.0).to(torch.bfloat16))
    assert torch.equal(centroids_low[:, 70:], torch.zeros_like(centroids_low[:, 70:]))
    # the norms of the rounded centroids: the distance between the kernel's two rounded operands
    rounded = (centroids * -2.0).to(torch.bfloat16).float() / -2.0
    assert torch.allclose(sq_norms[:, :70], rounded.square().sum(-1), rtol=1e-6)
    assert torch.all(sq_norms[:, 70:] == float("inf"))


def test_fp8_frame_centers_and_scales_by_powers_of_two_that_fit_the_centroids():
    offsets = torch.tensor([0.0, 40.0, -3.0, 7.0], device=DEVICE)[:, None, None]
    spreads = torch.tensor([1e-3, 1.0, 37.0, 0.0], device=DEVICE)[:, None, None]
    centroids = torch.randn(4, 30, 64, device=DEVICE) * spreads + offsets
    frame = fp8_frame(centroids)
    assert torch.allclose(frame.means, centroids.mean(1), rtol=1e-5, atol=1e-6)
    assert torch.equal(frame.scales.log2(), frame.scales.log2().round()) and frame.scales[3] == 1.0
    largest = (centroids[:3] - frame.means[:3, None]).abs().amax(dim=(1, 2)) / frame.scales[:3]
    assert torch.all(largest > FP8_CENTROID_RANGE / 2) and torch.all(largest <= FP8_CENTROID_RANGE)


def _e4m3(values):
    return values.clamp(-448, 448).to(torch.float8_e4m3fn)


def test_fp8_operands_are_centered_scaled_and_rounded_to_nearest_even():
    """points_to_fp8 (strided [B, H, N, D] points) and the fp8 centroid operands against torch's own
    float8_e4m3fn casts (round to nearest even); a coordinate past 448 x scale saturates instead of becoming
    NaN; the norms are those of the rounded centroids."""
    activations = _points(1, 70, 2 * 64, torch.bfloat16).view(1, 70, 2, 64) * 9
    activations[0, 3, 1, 5] = 1e4
    points = activations.transpose(1, 2)  # [1, 2, 70, 64]
    frame = Fp8Frame(torch.randn(2, 64, device=DEVICE), torch.tensor([0.5, 4.0], device=DEVICE))
    found = points_to_fp8(points, frame)
    expected = _e4m3((points.reshape(2, 70, 64).float() - frame.means[:, None]) / frame.scales[:, None, None])
    assert found.dtype == torch.float8_e4m3fn and torch.equal(found.float(), expected.float())
    assert found[1, 3, 5].float() == 448.0
    centroids = torch.randn(2, 70, 64, device=DEVICE) * 20 + 5
    centroid_frame = fp8_frame(centroids)
    centroids_low, sq_norms = assign_operands(centroids, torch.float8_e4m3fn, centroid_frame)
    expected_low = _e4m3((centroids - centroid_frame.means[:, None]) * -2.0 / centroid_frame.scales[:, None, None])
    assert torch.equal(centroids_low[:, :70].float(), expected_low.float())
    assert torch.allclose(sq_norms[:, :70], expected_low.float().square().sum(-1) / 4, rtol=1e-6)
    assert torch.all(sq_norms[:, 70:] == float("inf"))
    with pytest.raises(ValueError, match="Fp8Frame"):
        assign_operands(centroids, torch.float8_e4m3fn)


def test_fp8_assignment_is_the_nearest_of_the_rounded_operands():
    """fp8 points and centroids: the labels are the nearest centroids of the rounded operands (float64
    distances between the fp8 values, up to the tensor cores' accumulation), exact ties go to the first
    copy, and where they differ from the unrounded nearest, the chosen centroid is nearly as near: by the
    triangle inequality, its distance exceeds the nearest's by at most twice the rounding moves of the point
    and of the farthest-moved centroid."""
    points = _points(2, 300, 128, torch.bfloat16, seed=7) + 4.0  # a shared offset, which the frame removes
    centroids = _tied_centroids(points, 120)
    frame = fp8_frame(centroids)
    points8 = points_to_fp8(points, frame)
    labels = assign_to_nearest(points8, centroids, frame=frame)
    assert labels.max() < 60
    c8 = _e4m3((centroids - frame.means[:, None]) / frame.scales[:, None, None] * -2.0).double() / -2.0
    rounded = torch.cdist(points8.double(), c8).square()
    chosen = rounded.gather(2, labels.long().unsqueeze(-1)).squeeze(-1)
    # fp8 tensor cores add each 32-deep k-step to the accumulator (which starts from the norms) with ~14
    # significant bits of its largest term, <= (|x| + |c|)^2: four k-steps, twice (chosen and best), with a
    # bit to spare, <= 2^-10 (|x| + max |c|)^2 (the interpreter sums exactly)
    slack = 2.0 ** -10 * (points8.double().norm(dim=-1) + c8.norm(dim=-1).max(-1, keepdim=True).values) ** 2
    assert torch.all(chosen - rounded.min(-1).values <= slack)
    scales = frame.scales[:, None, None].double()
    point_moves = (points8.double() * scales + frame.means[:, None].double() - points.double()).norm(dim=-1)
    centroid_moves = (c8 * scales + frame.means[:, None].double() - centroids.double()).norm(dim=-1)
    distances = torch.cdist(points.double(), centroids.double())
    exact_chosen = distances.gather(2, labels.long().unsqueeze(-1)).squeeze(-1)
    slack = 2 * (point_moves + centroid_moves.max(-1, keepdim=True).values)
    assert torch.all(exact_chosen <= distances.min(-1).values + slack + 1e-6)
    assert (labels.long() == distances.argmin(-1)).float().mean() > 0.9


def test_update_reads_members_of_batched_strided_points():
    """points [B, H, N, D] as the transposed view of [B, N, H, D] activations, B > 1: each cluster's members
    are found at their own batch and head."""
    activations = _points(2, 90, 3 * 64, torch.bfloat16).view(2, 90, 3, 64)
    points = activations.transpose(1, 2)  # [2, 3, 90, 64], not contiguous
    flat = points.reshape(6, 90, 64)
    old = torch.randn(6, 10, 64, device=DEVICE)
    labels = torch.randint(0, 9, (6, 90), device=DEVICE, dtype=torch.int32)
    sorted_points, offsets = sort_by_label(labels, 10)
    centroids, sizes = update_centroids(points, sorted_points, offsets, old)
    expected, expected_sizes = update_centroids_torch(flat, labels.long(), old)
    assert torch.equal(sizes, expected_sizes)
    assert torch.allclose(centroids, expected, rtol=1e-5, atol=1e-5)


def test_update_matches_reference_means_and_keeps_empty_clusters():
    points = _points(3, 150, 64, torch.bfloat16)
    old = torch.randn(3, 20, 64, device=DEVICE)
    labels = torch.randint(0, 18, (3, 150), device=DEVICE, dtype=torch.int32)  # clusters 18, 19 empty
    sorted_points, offsets = sort_by_label(labels, 20)
    centroids, sizes = update_centroids(points, sorted_points, offsets, old)
    expected, expected_sizes = update_centroids_torch(points, labels.long(), old)
    assert torch.equal(sizes, expected_sizes)
    assert torch.allclose(centroids, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(centroids[:, 18:], old[:, 18:])


def test_sort_by_label_groups_each_cluster():
    labels = torch.tensor([[2, 0, 2, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.int32, device=DEVICE)
    sorted_points, offsets = sort_by_label(labels, 3)
    assert offsets.tolist() == [0, 2, 3, 5, 5, 10, 10]
    assert sorted_points.tolist() == [1, 4, 3, 0, 2, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("num_problems, num_points, num_clusters", [
    (3, 2500, 37),
    (2, 1024, 1),    # one cluster: every point in one run
    (1, 129, 300),   # more clusters than points: most are empty
    (2, 3000, 1000),
    (1, 700, 1024),
    (65, 300, 1000),  # 65,000 (problem, cluster) slots: the largest keys int16 holds after the shift
    (66, 300, 1000),  # 66,000: int32 keys
])
def test_label_sort_is_a_stable_sort_by_problem_and_label(num_problems, num_points, num_clusters):
    """The contract the update kernel and the plan rely on (and any faster sort must keep): clusters in
    (problem, label) order, each listing its points in token order, with exact offsets, with int16 keys
    where they fit and int32 keys above."""
    generator = torch.Generator().manual_seed(num_points)
    labels = torch.randint(0, num_clusters, (num_problems, num_points), generator=generator, dtype=torch.int32)
    labels[:, :200] = labels[:, :1]  # a long run of one label
    keys = (labels.long() + torch.arange(num_problems).unsqueeze(1) * num_clusters).reshape(-1)
    expected = torch.sort(keys, stable=True).indices.to(torch.int32)
    expected_offsets = torch.searchsorted(keys[expected.long()], torch.arange(num_problems * num_clusters + 1),
                                          out_int32=True)
    sorted_points, offsets = sort_by_label(labels.to(DEVICE), num_clusters)
    assert sorted_points.dtype == torch.int32 and offsets.dtype == torch.int32
    assert torch.equal(sorted_points.cpu(), expected)
    assert torch.equal(offsets.cpu(), expected_offsets)


def test_kmeans_reaches_the_reference_objective_on_strided_points():
    points = _points(1, 3 * 300, 64, torch.bfloat16, seed=4).view(1, 3, 300, 64)[0, :, 20:280]  # a strided view
    init = points[:, :16].float()
    result = TritonBackend().kmeans(points, init, 5)
    reference = kmeans_torch(points, init, 5)
    assert result.labels.shape == (3, 260) and result.cluster_sizes.sum(-1).tolist() == [260] * 3
    ours = kmeans_objective(points, result.centroids, result.labels)
    theirs = kmeans_objective(points, reference.centroids, reference.labels)
    assert torch.all(ours <= theirs * 1.01)


def test_kmeans_hands_its_label_sort_to_the_plan():
    from svg2_core.triton_kernels.plan import cluster_rows

    points = _points(2, 120, 64, torch.float16, seed=5)
    result = TritonBackend().kmeans(points, points[:, :10].float(), 2)
    assert torch.equal(result.label_sort, sort_by_label(result.labels, 10)[0])
    reused = cluster_rows(result.labels, 10, 124, 1, 3, label_sort=result.label_sort)
    fresh = cluster_rows(result.labels, 10, 124, 1, 3)
    assert torch.equal(reused, fresh)
    assert kmeans_torch(points, points[:, :10].float(), 1).label_sort is None
    middle = (reused[:, 1:121] - torch.arange(2, device=DEVICE).unsqueeze(1) * 124 - 1).long()
    sorted_labels = result.labels.gather(1, middle)
    assert torch.all(sorted_labels[:, 1:] >= sorted_labels[:, :-1])  # ... grouped by cluster
    assert reused[:, 0].tolist() == [0, 124] and reused[:, -3:].tolist() == [[121, 122, 123], [245, 246, 247]]


def test_cluster_returns_both_kmeans_whether_or_not_it_may_overlap_them():
    from svg2_core.backends import TorchBackend

    generator = torch.Generator().manual_seed(6)
    q_points, k_points = (torch.randn(2, 144, 64, generator=generator).to(DEVICE, torch.bfloat16) for _ in range(2))
    q_init, k_init = q_points[:, :6].float(), k_points[:, 10:34].float()
    backend = TritonBackend()
    for overlap in (False, True):  # overlapping needs CUDA: on the CPU the two run one after the other
        q_clusters, k_clusters = backend.cluster(q_points, q_init, k_points, k_init, 2, overlap=overlap)
        for got, alone in ((q_clusters, backend.kmeans(q_points, q_init, 2)),
                           (k_clusters, backend.kmeans(k_points, k_init, 2))):
            assert torch.equal(got.labels, alone.labels) and torch.equal(got.centroids, alone.centroids)
            assert torch.equal(got.cluster_sizes, alone.cluster_sizes)
    torch_q, torch_k = TorchBackend().cluster(q_points, q_init, k_points, k_init, 2)
    assert torch_q.centroids.shape == (2, 6, 64) and torch_k.centroids.shape == (2, 24, 64)
