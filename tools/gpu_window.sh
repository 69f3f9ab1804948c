#!/usr/bin/env bash
# One short GPU window, resumable: a CPU-GPU correctness check, the epoch benchmark, then the paper
# profile's training on the GPU until a time limit, everything written under OUT:
#
#     bash tools/gpu_window.sh OUT SECONDS [reproduce arguments, e.g. --datasets ml-1m --seeds 0,1,2]
#
# OUT/check.json    first-epoch losses and validation NDCG@10 of one small run on the CPU and on the GPU,
#                   and the largest loss difference between 3 runs trained as a group and alone
# OUT/bench/        python -m cdlib.bench --device cuda (seconds per epoch, FLOP/s, groups of 1/5/15)
# OUT/results/      a copy of results/ to which the GPU runs add their records (runs whose records exist
#                   are read, not trained); no run starts after the time limit, and `timeout` ends the
#                   window SECONDS after it began whatever happens (an interrupted run leaves no record).
# Resume: copy OUT/results/runs/*.json into results/runs/ (and commit them), then run the script again.
# On a copy of the tree without its own .git, set CDLIB_GIT_COMMIT so that the records name the commit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: tools/gpu_window.sh OUT SECONDS [reproduce arguments]}
SECONDS_TOTAL=${2:?usage: tools/gpu_window.sh OUT SECONDS [reproduce arguments]}
shift 2
START=$(date +%s)
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/bench"
left() { echo $(( SECONDS_TOTAL - ($(date +%s) - START) )); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || { echo "no GPU here"; exit 2; }
python3 -c "from cdlib import runs; print(runs.git_state())"

echo "== correctness: one small run on the CPU and on the GPU ($(left) s left)"
timeout 180 python3 - "$OUT/check.json" <<'PY'
import json, sys
from cdlib import train
out = {}
for dev in ("cpu", "cuda"):
    cfg = train.Config(dataset="ml-100k", backbone="cdae", size=20, epochs=3, patience=3, min_epochs=3,
                       subset_users=300, device=dev).canonical()
    r = train.fit(cfg, train.dataset_for(cfg), progress=False)
    out[dev] = [{k: e[k] for k in ("epoch", "loss", "valid_NDCG@10")} for e in r["curve"]]
gap = max(abs(a["loss"] - b["loss"]) for a, b in zip(out["cpu"], out["cuda"]))
out["max_loss_difference"] = gap
# a group of 3 CD students on the GPU against the same runs alone (train.fit_group)
cfgs = [train.Config(dataset="ml-100k", backbone="cdae", size=20, method="cd", guide="student", teacher_size=40,
                     epochs=3, patience=3, min_epochs=3, subset_users=300, device="cuda", seed=s).canonical()
        for s in range(3)]
ds = train.dataset_for(cfgs[0])
teacher = train.fit(cfgs[0].teacher(), ds, progress=False)["model"].eval()
alone = [train.fit(c, ds, teacher, progress=False)["curve"] for c in cfgs]
group = [o["curve"] for o in train.fit_group(cfgs, ds, [teacher] * 3, progress=False)]
out["group_max_loss_difference"] = max(abs(a["loss"] - b["loss"]) for x, y in zip(alone, group) for a, b in zip(x, y))
print(json.dumps(out, indent=1))
open(sys.argv[1], "w").write(json.dumps(out, indent=1))
PY

echo "== benchmark ($(left) s left)"
timeout $(( $(left) / 4 )) python3 -m cdlib.bench --dataset ml-1m --device cuda --out "$OUT/bench/ml-1m_cuda.json"

echo "== reproduction on the GPU ($(left) s left)"
mkdir -p "$OUT/results"
cp -r results/runs "$OUT/results/" 2>/dev/null || true
LIMIT=$(( $(left) - 60 ))
if [ "$LIMIT" -gt 60 ]; then
  timeout $(( $(left) - 20 )) python3 -m cdlib.reproduce --profile paper --device cuda --results "$OUT/results" \
      --time-limit "$LIMIT" --no-report --jobs 4 "$@"
fi
comm -13 <(ls results/runs | sort) <(ls "$OUT/results/runs" | sort) > "$OUT/new_records.txt"
echo "== $(wc -l < "$OUT/new_records.txt") new records in $OUT/results/runs ($(left) s left)"
