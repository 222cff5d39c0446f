# Session 7, run 53 (one H200): the int8 scores' conversion (XU pipe) and the k-means assign operand.
#   bash benchmarks/h200_lab7.sh   (results under $OUT, or /tmp when OUT is unset)
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
python3 -m pytest -q tests/gpu tests/test_triton_quantize.py > $OUT/gpu_tests.txt 2>&1; tail -2 $OUT/gpu_tests.txt
python3 -m svg2_core.bench --qk int8 --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 \
    --sol-tau --configs 128x128x8x3-r64x4 128x128x8x3-r64x4-c0 128x128x8x3-r64x4-c2 128x128x8x4-r64x4 128x128x8x4-r64x4-c2 \
    --json $OUT/wan14b_int8.json > $OUT/bench14b_int8.txt 2>&1; grep "SVG2\|cuDNN\|kernel\|^vs\|==" $OUT/bench14b_int8.txt | head -60
python3 benchmarks/kernel_lab.py --skip-floors --qk int8 --density 0.30 --configs 128x128x8x3-r64x4 \
    --json $OUT/lab_kmeans.json > $OUT/lab.txt 2>&1; grep "assign\|k-means\|SVG2" $OUT/lab.txt
