# Session 10's experiments on one H200 (BENCHMARKS.md, session 10), by run (RUN=75 ...); results under $OUT.
# Run 74 (the slots arg-min against run 72's, commit 6246ec0) is `RUN=74 bash benchmarks/h200_lab9.sh`.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader

# Run 75: the k-means lab with the assignment's tile sweep (slots arg-min) and the two streams at high priority.
if [ "$RUN" = 75 ]; then
python3 benchmarks/kmeans_lab.py --json $OUT/kmeans_lab.json
fi
# Run 76: fp8 assignment operands (centered, power-of-two scale per problem): the k-means tests on the GPU, then the
# lab (fp8 against bf16: time, label agreement, objective; the fp8 tile sweep; k-means with either).
# Run 77: the same after the fp8 fixes (norms added after the dot, the frame in one kernel).
if [ "$RUN" = 76 ] || [ "$RUN" = 77 ]; then
python3 -m pytest -q tests/test_triton_kmeans.py tests/test_triton_backend.py > $OUT/gpu_tests.txt 2>&1; tail -3 $OUT/gpu_tests.txt
python3 benchmarks/kmeans_lab.py --json $OUT/kmeans_lab.json
fi
# Run 79: the lab at the final code (run 78 is `bash benchmarks/h200_check.sh` at 1261913), no tile sweep.
if [ "$RUN" = 79 ]; then
python3 benchmarks/kmeans_lab.py --no-sweep --json $OUT/kmeans_lab.json
fi
# Run 80: the update at 16 rows x 1 / 4 warps (runs 74, 75's sweep), the lab without the tile sweep.
if [ "$RUN" = 80 ]; then
python3 -m pytest -q tests/test_triton_kmeans.py > $OUT/gpu_tests.txt 2>&1; tail -1 $OUT/gpu_tests.txt
python3 benchmarks/kmeans_lab.py --no-sweep --json $OUT/kmeans_lab.json
fi
# Run 81: the bench at Wan 14B (int8, ~15% / ~30%) at the final code, for the k-means and whole-call numbers.
if [ "$RUN" = 81 ]; then
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN\|==" $OUT/bench14b_int8.txt
fi
true
