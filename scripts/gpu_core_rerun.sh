#!/usr/bin/env bash
# Second lease of the GPU-core work: one process's ceiling (benchmarks.gpu_ceiling), then the
# core layout again (GPU decode; CPU decode against the baseline's 8 processes under MPS), then
# the GPU tests. Usage: GIT_COMMIT=<this commit> OUT=/some/dir bash scripts/gpu_core_rerun.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_box_env.sh
OUT=${OUT:?set OUT to the results folder}
common=(--concurrency 20,40 --total-number 6000 --warmup 300 --processes 4 --results-dir "$OUT")
python3 -m service.tools.export_model >"$OUT/logs.txt" 2>&1
timeout 200 python3 -m benchmarks.gpu_ceiling --json "$OUT/gpu-ceiling.json" >"$OUT/ceiling.txt" 2>&1
tail -40 "$OUT/ceiling.txt"
python3 -m benchmarks.compare --config service/configs/resnet50_gpu_decode.toml \
  --handlers pipelined --workers 8 --tag core-gpudecode-rerun "${common[@]}" >>"$OUT/logs.txt" 2>&1
python3 -m benchmarks.compare --config service/configs/resnet50.toml --workers 8 --mps \
  --tag core-cpudecode-8-rerun "${common[@]}" >>"$OUT/logs.txt" 2>&1
grep -E "^(pipelined|baseline) +[0-9]|x QPS" "$OUT/logs.txt"
for log in /tmp/compare-logs-*/pipelined.log; do
  echo "== $log"; grep -E "GPU core" "$log" | tail -6
done >"$OUT/core-logs.txt" 2>&1
cat "$OUT/core-logs.txt"
rm -f "$OUT"/*.png
timeout 110 python3 -m pytest -q -m gpu tests/gpu -x -p no:cacheprovider 2>&1 | tail -15
