#!/usr/bin/env bash
# Table 8's GPU rows and the seconds per training epoch on a GPU, on a machine with CUDA:
#
#     bash tools/gpu_timings.sh [OUT]        (OUT default: results)
#
# Writes OUT/08_timings.csv (the rows recorded in results/ of other devices, plus this GPU's) and
# OUT/bench/<dataset>_cuda.json. On a copy of the tree without its own .git, set CDLIB_GIT_COMMIT.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results}
export PYTHONUNBUFFERED=1
[ -d .data ] && export CDLIB_DATA=${CDLIB_DATA:-$PWD/.data}     # tools/gpu_window.sh --pack, carried to the GPU machine
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "from cdlib import runs; print(runs.git_state())"
python3 - "$OUT" <<'PY'
import sys
from cdlib import bench, runs, experiments as ex
t = bench.timing_table(["ml-100k", "ml-1m", "amazon-music"], ["cdae", "neumf"], ["cuda"],
                       keep=runs.read_table("08_timings"))
print(tables.save_table(t.set_index("dataset"), "08_timings", sys.argv[1]))
PY
mkdir -p "$OUT/bench"
for d in ${BENCH-ml-1m citeulike-t}; do
  python3 -m cdlib.bench --dataset "$d" --device cuda --out "$OUT/bench/${d}_cuda.json"
done
