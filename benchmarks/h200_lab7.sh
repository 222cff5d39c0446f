# Session 7 (one H200). Run 53 (commit 1ae3dc6): the int8 scores' conversion and the assign operand:
#   bench --configs 128x128x8x3-r64x4 128x128x8x3-r64x4-c0 128x128x8x3-r64x4-c2 128x128x8x4-r64x4 128x128x8x4-r64x4-c2
#   and kernel_lab --skip-floors --qk int8 --density 0.30 --configs 128x128x8x3-r64x4 (assign lab variants).
# Run 54: softmax denominators from the tensor cores (-l) against the row sums on the FMA pipe.
#   bash benchmarks/h200_lab7.sh   (results under $OUT, or /tmp when OUT is unset)
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
python3 -m pytest -q tests/gpu tests/test_triton_quantize.py tests/test_triton_attention.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
for shape in wan21-14b-720p; do
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape $shape --top-p 0.6246 0.8745 \
    --sol-tau --configs 128x128x8x3-r64x4-l 128x128x8x3-r64x4 128x128x8x4-r64x4-l 128x128x8x3-r64x4 \
    --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN\|^vs\|==" $OUT/bench14b_int8.txt | head -60
done
python3 -c "
import json; d = json.load(open('$OUT/wan14b_int8.json'))
for r in d['results'][0]['rows']:
    if 'kernel_ms_by_config' in r: print(r['name'], {k: round(v, 2) for k, v in r['kernel_ms_by_config'].items()})"
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape hunyuan-720p --top-p --density 0.15 0.30 \
    --sol-tau --configs 128x128x8x3-r64x4-l 128x128x8x3-r64x4 --json $OUT/hunyuan.json > $OUT/bench_hunyuan.txt 2>&1; grep "SVG2\|cuDNN" $OUT/bench_hunyuan.txt
python3 -c "
import json; d = json.load(open('$OUT/hunyuan.json'))
for r in d['results'][0]['rows']:
    if 'kernel_ms_by_config' in r: print(r['name'], {k: round(v, 2) for k, v in r['kernel_ms_by_config'].items()})"
