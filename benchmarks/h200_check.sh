# The GPU checks and timings of BENCHMARKS.md session 4 (one H200, ~5 minutes):
#   bash benchmarks/h200_check.sh   (results under $OUT, or /tmp when OUT is unset)
# Wan 14B at the same top_p twice: int8 scores (the node's default) and scores in bf16.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
python3 -m pytest -q tests/gpu tests/test_triton_backend.py tests/test_triton_attention.py tests/test_triton_kmeans.py tests/test_triton_selection.py tests/test_triton_quantize.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
for qk in int8 input; do
  python3 -m svg2_core.bench --qk $qk --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 --json $OUT/wan14b_$qk.json > $OUT/bench14b_$qk.txt 2>&1; tail -9 $OUT/bench14b_$qk.txt
done
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape hunyuan-720p wan21-1.3b-480p --top-p --density 0.15 0.30 --json $OUT/others.json > $OUT/bench_others.txt 2>&1; grep -v "^comfy\|positional\|flash\|efficient" $OUT/bench_others.txt | tail -12
python3 benchmarks/call_profile.py --qk int8 --shape wan21-14b-720p --batch 2 --top-p 0.3 --inputs flat --row-limit 25 > $OUT/profile.txt 2>&1; head -3 $OUT/profile.txt
