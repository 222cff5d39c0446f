# Session 10's experiments on one H200 (BENCHMARKS.md, session 10), by run (RUN=75 ...); results under $OUT.
# Run 74 (the slots arg-min against run 72's, commit 6246ec0) is `RUN=74 bash benchmarks/h200_lab9.sh`.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader

# Run 75: the k-means lab with the assignment's tile sweep (slots arg-min) and the two streams at high priority.
if [ "$RUN" = 75 ]; then
python3 benchmarks/kmeans_lab.py --json $OUT/kmeans_lab.json
fi
true
