# Session 7's experiments on one H200 (BENCHMARKS.md, session 7), by run; without RUN, run 55's commands.
#   RUN=56 bash benchmarks/h200_lab7.sh   (results under $OUT, or /tmp when OUT is unset)
# Run 53 (commit 1ae3dc6, whose options are gone since): the int8 scores' conversion and the assign operand,
#   bench --configs 128x128x8x3-r64x4 128x128x8x3-r64x4-c0 128x128x8x3-r64x4-c2 128x128x8x4-r64x4 128x128x8x4-r64x4-c2
#   and kernel_lab --skip-floors --qk int8 --density 0.30 --configs 128x128x8x3-r64x4 (assign lab variants).
# Run 54 (commit b69ce2c, option gone since): softmax denominators from the tensor cores (-l),
#   bench --configs 128x128x8x3-r64x4-l 128x128x8x3-r64x4 128x128x8x4-r64x4-l at Wan 14B and HunyuanVideo.
# Run 55 (commit ae63977; no RUN): remainder tiles with less shared memory: fewer stages, 64-key tiles.
# Run 56 (commit 39571bf), run 59 (commit befd11f): below, on any later commit.
# Run 60 (commit 2974f4a: its norms_by_mma variant is gone since): below.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
# Run 60: the k-means assignment with the centroid norms entering through a small MMA (norms_by_mma).
if [ "$RUN" = 60 ]; then
python3 -m pytest -q tests/test_triton_kmeans.py tests/gpu > $OUT/gpu_tests.txt 2>&1; tail -1 $OUT/gpu_tests.txt
python3 benchmarks/kernel_lab.py --skip-floors --qk int8 --density 0.30 --configs --json $OUT/lab_kmeans.json \
    > $OUT/lab_kmeans.txt 2>&1; grep "assign\|k-means" $OUT/lab_kmeans.txt
exit 0
fi
# Run 59: main query tiles in one-warpgroup programs, two per SM (int8, Wan 14B 30%), alternated with the default.
if [ "$RUN" = 59 ]; then
python3 benchmarks/kernel_lab.py --skip-floors --skip-kmeans --qk int8 --density 0.30 --configs 128x128x8x3-r64x4x2 \
    128x64x4x3-r64x4x2 128x64x4x4-r64x4x2 64x128x4x2-r0 128x128x8x3-r64x4x2 128x64x4x3-r64x4x2 128x64x4x4-r64x4x2 \
    64x128x4x2-r0 --json $OUT/lab_main_tiles.json > $OUT/lab_main_tiles.txt 2>&1; grep "SVG2 kernel" $OUT/lab_main_tiles.txt
exit 0
fi
# Run 56: the same kernel configurations alternated (A B A B A B) at Wan 14B 30% (int8), and Wan 1.3B (bf16).
if [ "$RUN" = 56 ]; then
python3 benchmarks/kernel_lab.py --skip-floors --skip-kmeans --qk int8 --density 0.30 --configs 128x128x8x3-r64x4 \
    128x128x8x3-r64x4x2 128x128x8x3-r64x4 128x128x8x3-r64x4x2 128x128x8x3-r64x4 128x128x8x3-r64x4x2 \
    --json $OUT/lab_remainder.json > $OUT/lab_remainder.txt 2>&1; grep "SVG2 kernel, SVG2 plan" $OUT/lab_remainder.txt
python3 -m svg2_core.bench --qk input --peakedness 4 --rows-per-head 128 --shape wan21-1.3b-480p --top-p --density 0.15 0.30 \
    --sol-tau --configs 128x128x8x3-r64x4 128x128x8x3-r64x4x2 --json $OUT/wan13b.json > $OUT/bench_wan13b.txt 2>&1; grep "SVG2\|cuDNN" $OUT/bench_wan13b.txt
python3 -c "
import json; d = json.load(open('$OUT/wan13b.json'))
for r in d['results'][0]['rows']:
    if 'kernel_ms_by_config' in r: print('wan13b', round(r['density'], 3), {k: round(v, 3) for k, v in r['kernel_ms_by_config'].items()})"
exit 0
fi
python3 -m pytest -q tests/gpu tests/test_triton_attention.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
CONFIGS="128x128x8x3-r64x4 128x128x8x3-r64x4x2 128x128x8x3-r64x4x3x64 128x128x8x3-r64x4x4x64 128x128x8x3-r64x4x2x64 128x128x8x3-r64x4"
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 \
    --sol-tau --configs $CONFIGS --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN" $OUT/bench14b_int8.txt
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape hunyuan-720p --top-p --density 0.15 0.30 \
    --sol-tau --configs $CONFIGS --json $OUT/hunyuan.json > $OUT/bench_hunyuan.txt 2>&1; grep "SVG2\|cuDNN" $OUT/bench_hunyuan.txt
for f in wan14b_int8 hunyuan; do python3 -c "
import json; d = json.load(open('$OUT/$f.json'))
for r in d['results'][0]['rows']:
    if 'kernel_ms_by_config' in r: print('$f', round(r['density'], 3), {k: round(v, 2) for k, v in r['kernel_ms_by_config'].items()})"; done
