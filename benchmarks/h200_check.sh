# The GPU checks and timings of BENCHMARKS.md sessions 6-9 (one H200, ~6 minutes; runs 57, 64, 69, 73):
#   bash benchmarks/h200_check.sh   (results under $OUT, or /tmp when OUT is unset)
# Wan 14B with int8 scores (the node's default at this size) at ~15% and ~30% density, with comfy-kitchen's
# sol_attn when .whl/comfy_kitchen.zip is there; the low-density settings that face sol_attn at tau 4;
# HunyuanVideo and Wan 1.3B. Default kernel configuration only, so every "whole call" is the node's call.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
python3 -m pytest -q tests/gpu tests/test_triton_backend.py tests/test_triton_attention.py tests/test_triton_kmeans.py tests/test_triton_selection.py tests/test_triton_quantize.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
SOL=""
if [ -f .whl/comfy_kitchen.zip ]; then python3 -m zipfile -e .whl/comfy_kitchen.zip /tmp/site; SOL="--sol-tau 0.5 1.0 2.0 4.0"; fi
PYTHONPATH=/tmp/site python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 $SOL --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN\|sol_attn\|^vs\|==" $OUT/bench14b_int8.txt
PYTHONPATH=/tmp/site python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --min-k-cluster-ratio 0.02 --top-p --density 0.07 0.09 0.095 0.10 ${SOL:+--sol-tau 4.0} --json $OUT/wan14b_low_density.json > $OUT/bench14b_low.txt 2>&1; grep "SVG2\|sol_attn\|^vs" $OUT/bench14b_low.txt
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape hunyuan-720p wan21-1.3b-480p --top-p --density 0.15 0.30 --sol-tau --json $OUT/others.json > $OUT/bench_others.txt 2>&1; grep "SVG2\|cuDNN\|==" $OUT/bench_others.txt
