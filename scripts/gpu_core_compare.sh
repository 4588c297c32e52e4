#!/usr/bin/env bash
# The GPU-core comparison on the lent GPU box, as one command (results and logs under $OUT):
#   A. GPU decode: the pipelined service as one GPU core and 8 fronts;
#   B. CPU decode (resnet50.toml): the baseline's best layout (8 processes under MPS, 8 model
#      copies) against one GPU core and 8 fronts (the CPU stages in the fronts), one run;
#   C. the one-process baseline on resnet50.toml (the reference's layout), same lease.
# Usage: GIT_COMMIT=<this commit> OUT=/some/dir bash scripts/gpu_core_compare.sh (after
# scripts/fetch_gpu_wheels.sh here; the box has no history, so the records take GIT_COMMIT)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_box_env.sh
OUT=${OUT:?set OUT to the results folder}
common=(--concurrency 20,40 --total-number 6000 --warmup 300 --processes 4 --results-dir "$OUT")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
git rev-parse HEAD >>"$OUT/device.txt" 2>/dev/null || true
python3 -m service.tools.export_model >"$OUT/logs.txt" 2>&1
python3 -m benchmarks.compare --config service/configs/resnet50_gpu_decode.toml \
  --handlers pipelined --workers 8 --tag core-gpudecode "${common[@]}" >>"$OUT/logs.txt" 2>&1
python3 -m benchmarks.compare --config service/configs/resnet50.toml --workers 8 --mps \
  --tag core-cpudecode-8 "${common[@]}" >>"$OUT/logs.txt" 2>&1
python3 -m benchmarks.compare --config service/configs/resnet50.toml --handlers baseline \
  --workers 1 --tag baseline-1p "${common[@]}" >>"$OUT/logs.txt" 2>&1
grep -E "QPS|procs|GPU core|ratio|x$|pipelined|baseline" "$OUT/logs.txt" | tail -60
# The servers' own logs (the GPU core logs its frames and CPU per request at exit).
for log in /tmp/compare-logs-*/pipelined.log; do
  echo "== $log"; grep -E "GPU core" "$log" | tail -8
done >"$OUT/core-logs.txt" 2>&1
cat "$OUT/core-logs.txt"
