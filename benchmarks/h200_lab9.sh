# Session 9's experiments on one H200 (BENCHMARKS.md, session 9), by run (RUN=70 ...); results under $OUT.
# Commits: run 68 is `RUN=68 bash benchmarks/h200_lab8.sh` at aed8dc9; runs 69 (0591f8f) and 73 (1601dcc) are
# `bash benchmarks/h200_check.sh`; run 70 ran at 0591f8f with benchmarks/profile_kmeans.py (committed in af14509);
# run 71 af14509, run 72 f464374.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader

# Run 70: Nsight Compute on one warm k-means iteration's kernels at Wan 14B (assign q and k, sort k, update k).
if [ "$RUN" = 70 ]; then
ncu --profile-from-start off --set full -o $OUT/kmeans python3 benchmarks/profile_kmeans.py > $OUT/ncu_log.txt 2>&1
ncu -i $OUT/kmeans.ncu-rep --page details > $OUT/kmeans_details.txt 2>&1
ncu -i $OUT/kmeans.ncu-rep --page source --csv --print-source sass --kernel-name regex:_assign_kernel > $OUT/assign_sass.csv 2>&1
grep -E "^  [a-z_]|Duration|Compute \(SM\) Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy" $OUT/kmeans_details.txt
fi
# Runs 71, 72 and 74 (session 10: the slots arg-min against run 72's per-tile one, the update kernel's row block /
# warps sweep, the NaN-label test on the GPU): the k-means kernels' tests, then the k-means lab (assignment
# variants, sorts, updates, 2 warm iterations of q and k alone and on two streams).
if [ "$RUN" = 71 ] || [ "$RUN" = 72 ] || [ "$RUN" = 74 ]; then
python3 -m pytest -q tests/test_triton_kmeans.py tests/test_triton_backend.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
python3 benchmarks/kmeans_lab.py --json $OUT/kmeans_lab.json
fi
true
