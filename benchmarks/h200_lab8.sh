# Session 8's experiments on one H200 (BENCHMARKS.md, session 8), by run (RUN=61 ...); results under $OUT.
# Commits: run 61 c742310, 62 d9a05b3, 63 803a3c5, 65 ee0a494 (its variant reverted since), 66 bcd83d0,
# 67 5adab39, 68 aed8dc9 (session 9). Run 64 was `bash benchmarks/h200_check.sh` at 0caa03e.
OUT=${OUT:-/tmp}
A=128x128x8x3-r64x4x2; B=128x128x8x3-r64x4x2-m
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader

# kernel_tests [TEST FILE ...]: the attention kernels' tests (and any others named) on the GPU
kernel_tests() {
python3 -m pytest -q tests/test_triton_attention.py tests/test_triton_quantize.py "$@" > $OUT/gpu_tests.txt 2>&1; tail -1 $OUT/gpu_tests.txt
}
# lab NAME [KERNEL_LAB OPTIONS ...] --configs CONFIG ...: kernel_lab at Wan 14B, 30% of the keys (unless the
# options say otherwise), results in $OUT/NAME.json / .txt, the kernel rows printed
lab() {
name=$1; shift
python3 benchmarks/kernel_lab.py --skip-floors --density 0.30 "$@" --json $OUT/$name.json > $OUT/$name.txt 2>&1
grep "SVG2 kernel, SVG2 plan\|cuDNN all\|assign" $OUT/$name.txt
}

# Run 61: weights against the first key tile's row max (config `-m`, fixed_max) against the running max.
if [ "$RUN" = 61 ]; then
kernel_tests tests/gpu
lab lab_fixed_max --skip-kmeans --qk int8 --configs $A $B $A $B $A $B
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 \
    --configs $B $A --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN\|positional" $OUT/bench14b_int8.txt
python3 -c "
import json; d = json.load(open('$OUT/wan14b_int8.json'))
for r in d['results'][0]['rows']:
    if 'kernel_ms_by_config' in r: print('wan14b_int8', round(r['density'], 3), {k: round(v, 3) for k, v in r['kernel_ms_by_config'].items()})"
fi
# Run 62: the next tile's scores issued before this tile's P V (-m-a; 64-key tiles, 128 spill), int8 Wan 14B 30%.
if [ "$RUN" = 62 ]; then
kernel_tests
C=128x64x8x3-r64x4x2-m-a; D=128x64x8x4-r64x4x2-m-a; E=128x64x8x3-r64x4x2-m
lab lab_ahead --skip-kmeans --qk int8 --configs $B $C $D $E $A $B $C $D
fi
# Run 63: -m-a with 128-key tiles (their registers spill) against -m and 64-key -m-a.
if [ "$RUN" = 63 ]; then
C=128x64x8x3-r64x4x2-m-a; F=128x128x8x3-r64x4x2-m-a; G=128x128x8x2-r64x4x2-m-a
lab lab_ahead128 --skip-kmeans --qk int8 --configs $B $F $C $G $B $F
fi
# Run 65: -m-a with the weights carried in bf16 and the last tile masked after the loop (no spills), 128- and
# 64-key remainder tiles, against -m; GPU tests of the attention kernels first.
if [ "$RUN" = 65 ]; then
kernel_tests
F=128x128x8x3-r64x4x2-m-a; H=128x128x8x3-r64x4x2x64-m-a
lab lab_ahead2 --skip-kmeans --qk int8 --configs $B $F $H $B $F $H
fi
# Run 66: the kernel tests on the final code (run 65's variant reverted), then bf16 scores at Wan 1.3B (the node's
# default there): -m against the running max, alternated.
if [ "$RUN" = 66 ]; then
kernel_tests
lab lab_bf16_m --shape wan21-1.3b-480p --skip-kmeans --configs \
    128x128x8x3-r64x4 128x128x8x3-r64x4-m 128x128x8x3-r64x4 128x128x8x3-r64x4-m 128x128x8x3-r64x4 128x128x8x3-r64x4-m
fi
# Run 67: remainder tiles of 64 keys under -m-a (no spills, two programs per SM; 128 keys spill 224 B, one).
if [ "$RUN" = 67 ]; then
F=128x128x8x3-r64x4x2-m-a; H2=128x128x8x3-r64x4x2x64-m-a; H3=128x128x8x3-r64x4x3x64-m-a
lab lab_rem64 --skip-kmeans --qk int8 --configs $F $H2 $H3 $F $H2 $H3
fi
# Run 68 (session 9): the candidates compiled but not timed in session 8, against the default, alternated,
# and the k-means rows of kernel_lab; GPU tests of the attention and k-means kernels first.
if [ "$RUN" = 68 ]; then
kernel_tests tests/test_triton_kmeans.py
F=128x128x8x3-r64x4x2-m-a; F2=128x128x8x3-r64x4x2-m-a2; H3=128x128x8x3-r64x4x3x64-m-a; H32=128x128x8x3-r64x4x3x64-m-a2
lab lab_candidates --qk int8 --configs $F $F2 $H3 $H32 $F $F2 $H3 $H32
fi
true
