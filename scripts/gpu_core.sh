#!/usr/bin/env bash
# The GPU-core measurements on the lent GPU box, in two parts that each fit one call
# (results and logs under $OUT):
#   gpu-decode: the core alone (benchmarks.core_budget: stand-ins, then the real stages with
#               fronts calling tp.connect, 20 and 40 in flight, py-spy on the core), then the
#               pipelined service as one GPU core and 8 fronts at 20, 40 and 80 clients;
#   cpu-decode: resnet50.toml, one GPU core and 8 fronts (CPU stages in the fronts) against the
#               baseline's best layout (8 processes under MPS), and the one-process baseline.
# Usage: GIT_COMMIT=<this commit> OUT=/some/dir bash scripts/gpu_core.sh gpu-decode|cpu-decode
# (after scripts/fetch_gpu_wheels.sh here; the box has no history, so records take GIT_COMMIT)
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_box_env.sh
OUT=${OUT:?set OUT to the results folder}
part=${1:?name the part: gpu-decode or cpu-decode}
common=(--total-number 6000 --warmup 300 --processes 4 --results-dir "$OUT")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
echo "commit ${GIT_COMMIT:-unknown}; $(nproc) CPUs" | tee -a "$OUT/device.txt"
python3 -m service.tools.export_model >"$OUT/logs.txt" 2>&1
if [[ $part == gpu-decode ]]; then
  python3 -m benchmarks.core_budget --fronts 8 --callers 5 --seconds 8 \
    --json "$OUT/core-budget-standins-40.json" 2>>"$OUT/logs.txt" | tail -20
  for fronts in 4 8; do
    python3 -m benchmarks.core_budget --gpu --fronts "$fronts" --callers 5 --seconds 8 \
      --json "$OUT/core-budget-gpu-$((fronts * 5)).json" 2>>"$OUT/logs.txt" | tail -20
  done
  python3 -m benchmarks.compare --config service/configs/resnet50_gpu_decode.toml \
    --handlers pipelined --workers 8 --concurrency 20,40,80 --tag core-gpudecode \
    "${common[@]}" >>"$OUT/logs.txt" 2>&1
else
  python3 -m benchmarks.compare --config service/configs/resnet50.toml --workers 8 --mps \
    --concurrency 20,40 --tag core-cpudecode-8 "${common[@]}" >>"$OUT/logs.txt" 2>&1
  python3 -m benchmarks.compare --config service/configs/resnet50.toml --handlers baseline \
    --workers 1 --concurrency 20,40 --tag baseline-1p "${common[@]}" >>"$OUT/logs.txt" 2>&1
fi
grep -E "^(pipelined|baseline) +[0-9]|x QPS|procs" "$OUT/logs.txt"
for log in /tmp/compare-logs-*/pipelined.log; do  # the GPU core's own figures, per interval
  [[ -f $log ]] && { echo "== $log"; grep -E "GPU core" "$log" | tail -24; }
done >"$OUT/core-logs.txt" 2>&1
cat "$OUT/core-logs.txt"
