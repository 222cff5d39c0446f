nvidia-smi --query-gpu=name,clocks.sm,temperature.gpu --format=csv,noheader
python3 benchmarks/kernel_lab.py --skip-floors --configs 128x128x8x3-r64x4 --density 0.15 --json $OUT/lab_stages.json 2>&1 | grep -v Warn
python3 -m svg2_core.bench --peakedness 4 --rows-per-head 128 --shape wan21-14b-720p --top-p 0.6246 0.8745 --json $OUT/wan14b.json > $OUT/bench.txt 2>&1; tail -12 $OUT/bench.txt
