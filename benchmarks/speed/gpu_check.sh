#!/usr/bin/env bash
# A short, self-contained check of twm on a CUDA GPU: speed of the paper configuration and a real run.
#
#   benchmarks/speed/gpu_check.sh [OUT.md] [--allow-cpu] [--steps N] [--updates N] [--timeout S] [--keep-run]
#
# Checks, one table row each (written to OUT.md, default gpu_check.md, and to stdout):
#   1. twm bench --preset atari100k (Pong) in float32          (train.precision=float32)
#   2. the same in bfloat16                                    (train.precision=bfloat16)
#   3. the same compiled, float32                              (train.compile=true)
#   3b. the same captured, float32: each part of an update one CUDA graph (train.capture=true,
#      train.optimizer_impl=foreach, actor_critic.fresh_pool=400)
#   4. twm train --game Pong --preset atari100k for N = 2,000 interactions (--steps), timed: the paper's
#      networks, batches and update ratio (0.76 interactions per update), with the prefill, pretraining,
#      evaluation and checkpoints shrunk so that they fit in N steps (see TRAIN_SETS below).
# Each check's output is kept in OUT.logs/ (bench JSON, stdout/stderr, the run's final.json and
# metrics.jsonl); the run folder itself goes to a temporary folder, removed at the end (--keep-run
# keeps it). Without CUDA the script says so in one line and exits 2; --allow-cpu runs the same
# checks on the CPU with the smoke preset instead (a check of the script, seconds per check).
# Exit code: 0 every check passed, 1 some check failed or timed out (--timeout S per check, default 900).
# PYTHON=... chooses the interpreter (default: the repository's .venv, else python3).
set -uo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
out=gpu_check.md
allow_cpu=0
steps=2000
updates=""
timeout_s=900
keep_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --allow-cpu) allow_cpu=1 ;;
        --steps) steps=$2; shift ;;
        --updates) updates=$2; shift ;;
        --timeout) timeout_s=$2; shift ;;
        --keep-run) keep_run=1 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done

if [ -z "${PYTHON:-}" ]; then
    if [ -x "$here/.venv/bin/python" ]; then PYTHON=$here/.venv/bin/python; else PYTHON=python3; fi
fi
TWM=("$PYTHON" -m twm.cli)

if ! info=$("$PYTHON" -c 'import torch, twm; print(torch.__version__, torch.version.cuda or "-", int(torch.cuda.is_available()))' 2>&1); then
    echo "gpu_check: cannot import torch and twm with $PYTHON (make setup installs them): ${info##*$'\n'}" >&2
    exit 2
fi
read -r torch_version cuda_version has_cuda <<<"$info"
if [ "$has_cuda" = 1 ]; then
    mode=cuda
elif [ "$allow_cpu" = 1 ]; then
    mode=cpu
else
    echo "gpu_check: no CUDA GPU visible to torch $torch_version (CUDA build: $cuda_version); nothing checked (--allow-cpu: a tiny CPU run)"
    exit 2
fi

if [ "$mode" = cuda ]; then
    preset=atari100k
    updates=${updates:-10}
    bench_common=(--preset atari100k --game Pong --device cuda --updates "$updates" --json)
    warmup=3
    compile_warmup=5  # the first updates compile (and recompile for the rollout's growing context)
    [ "$steps" -gt 1600 ] || { echo "gpu_check: --steps must exceed the 1,600-step prefill" >&2; exit 2; }
    # The paper's networks and batches. The prefill must hold one observation-pretraining batch
    # (replay.obs_batch_size = 1,600 frames), so it is 1,600 steps instead of 5,000; pretraining gets
    # 1% of the paper's sample budget (188 / 94 / 58 steps instead of 18,750 / 9,375 / 5,833); the
    # budget gives the paper's 0.76 interactions per update (7,600 samples each) after the prefill;
    # one final evaluation episode, no periodic ones; checkpoints only where the loop always writes them.
    pretrain_budget=5e5
    n_updates=$("$PYTHON" -c "print(round(($steps - 1600) / 0.76))")
    budget=$("$PYTHON" -c "print(int(5e5 + $n_updates * 7600))")
    TRAIN_SETS=(--set train.total_steps="$steps" --set train.prefill_steps=1600
        --set train.pretrain_budget="$pretrain_budget" --set train.budget="$budget"
        --set train.eval_interval="$steps" --set train.eval_episodes=1 --set train.final_eval_episodes=1
        --set train.checkpoint_interval="$steps" --set train.log_interval=100)
    train_device=(--device cuda)
    train_what="Pong, $steps interactions"
    train_setting="atari100k, prefill 1600, $n_updates updates (0.76/interaction), 1 final episode"
else
    preset=smoke
    updates=${updates:-2}
    bench_common=(--preset smoke --game Pong --device cpu --updates "$updates" --json --peak-seconds 0.1 --env-steps 100)
    warmup=1
    compile_warmup=1
    steps=300
    TRAIN_SETS=(--set train.total_steps="$steps")
    train_device=(--device cpu)
    train_what="Pong, $steps interactions"
    train_setting="smoke preset on the CPU (--allow-cpu)"
fi

logs="${out%.md}.logs"
mkdir -p "$logs" || exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/twm-gpu-check.XXXXXX") || exit 1
cleanup() { if [ "$keep_run" = 1 ]; then echo "gpu_check: run folder kept: $work/run"; else rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'echo "gpu_check: interrupted" >&2; exit 130' INT TERM

rows=()
failed=0

# One markdown cell: no pipes or newlines.
cell() { printf '%s' "$*" | tr '\n|' ' /'; }

# run_check NAME LOG_PREFIX CMD...: runs with the timeout; sets rc and secs.
run_check() {
    local name=$1 prefix=$2
    shift 2
    echo "gpu_check: [$name] $*" >&2
    local t0 t1
    t0=$(date +%s.%N)
    timeout --kill-after=30 "$timeout_s" "$@" >"$prefix.out" 2>"$prefix.err"
    rc=$?
    t1=$(date +%s.%N)
    secs=$("$PYTHON" -c "print(f'{$t1 - $t0:.1f}')")
}

status_of() {  # rc -> status text (and counts failures)
    if [ "$1" = 0 ]; then
        echo ok
    elif [ "$1" = 124 ] || [ "$1" = 137 ]; then
        echo "TIMEOUT (${timeout_s} s)"
    else
        echo "FAILED (exit $1)"
    fi
}

last_error() { local line; line=$(grep -v '^\s*$' "$1" | tail -n 1 | cut -c1-200); echo "${line:--}"; }

bench() {  # bench LABEL SETTING SLUG WARMUP EXTRA_ARGS...
    local label=$1 setting=$2 slug=$3 w=$4
    shift 4
    local prefix="$logs/bench_$slug"
    run_check "$label" "$prefix" "${TWM[@]}" bench "${bench_common[@]}" --warmup "$w" "$@"
    local status rate detail
    status=$(status_of "$rc")
    if [ "$rc" = 0 ] && parsed=$("$PYTHON" - "$prefix.out" <<'EOF'
import json
import sys

r = json.load(open(sys.argv[1]))
s = r["seconds"]
parts = ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in s.items() if k != "total")
frac = r.get("fraction_of_peak")
peak = f", {100 * frac:.1f}% of the {r['switches']['train.precision']} matmul peak" if frac is not None else ""
mem = r["memory"]["bytes"] / 2**30
print(f"{1 / s['total']:.2f}\t{s['total']:.3f} s/update median of {r['updates']} ({parts}){peak}, "
      f"peak memory {mem:.1f} GiB; {r['device_name']}")
EOF
    ); then
        rate=${parsed%%$'\t'*}
        detail=${parsed#*$'\t'}
    else
        [ "$rc" = 0 ] && status="FAILED (unreadable output)"
        rate="-"
        detail=$(last_error "$prefix.err")
    fi
    [ "$status" = ok ] || failed=1
    rows+=("| $(cell "$label") | $(cell "$setting") | ${secs} s | $rate | $(cell "$detail") | $status |")
}

bench "bench $preset, float32" "train.precision=float32" float32 "$warmup" --set train.precision=float32
bench "bench $preset, bfloat16" "train.precision=bfloat16" bfloat16 "$warmup" --set train.precision=bfloat16 \
    --env-steps 0 --peak-seconds 0
bench "bench $preset, compiled" "train.compile=true, float32, $compile_warmup warm-up updates" compiled \
    "$compile_warmup" --set train.compile=true --env-steps 0 --peak-seconds 0
bench "bench $preset, captured" "train.capture=true, foreach Adam, fresh_pool 400, float32" captured \
    "$compile_warmup" --set train.capture=true --set train.optimizer_impl=foreach \
    --set actor_critic.fresh_pool=400 --env-steps 0 --peak-seconds 0

# The training run.
run="$work/run"
prefix="$logs/train"
run_check "train" "$prefix" "${TWM[@]}" train --game Pong --preset "$preset" --seed 0 --run-dir "$run" \
    --no-progress "${train_device[@]}" "${TRAIN_SETS[@]}"
status=$(status_of "$rc")
[ -f "$run/eval/final.json" ] && cp "$run/eval/final.json" "$logs/train_final.json"
[ -f "$run/metrics.jsonl" ] && cp "$run/metrics.jsonl" "$logs/train_metrics.jsonl"
if [ "$rc" = 0 ] && parsed=$("$PYTHON" - "$run" <<'EOF'
import json
import os
import sys

run = sys.argv[1]
final = json.load(open(os.path.join(run, "eval", "final.json")))
lines = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl")) if x.strip()]
train = [x for x in lines if x.get("charts/updates", 0) > 0]
if len(train) >= 2:
    a, b = train[0], train[-1]
    rate = (b["charts/updates"] - a["charts/updates"]) / max(b["time"] - a["time"], 1e-9)
elif train:
    rate = train[0]["charts/updates_per_second"]
else:
    rate = float("nan")
print(f"{rate:.2f}\t{final['updates']} updates, {final['interactions']} interactions, "
      f"{final['wall_time_s']:.1f} s in the trainer; final score {final['mean']:.1f} over "
      f"{final['episodes']} episode(s) on {final['device']}")
EOF
); then
    rate=${parsed%%$'\t'*}
    detail=${parsed#*$'\t'}
else
    [ "$rc" = 0 ] && status="FAILED (no final.json)"
    rate="-"
    detail=$(last_error "$prefix.err")
fi
[ "$status" = ok ] || failed=1
rows+=("| $(cell "train $train_what") | $(cell "$train_setting") | ${secs} s | $rate | $(cell "$detail") | $status |")

device_name=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")' 2>/dev/null)
{
    echo "## twm GPU check"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), host $(hostname), $device_name ($mode), torch $torch_version (CUDA $cuda_version), $(getconf _NPROCESSORS_ONLN 2>/dev/null || echo "?") CPUs"
    echo "Logs: $logs/. updates/s: bench 1 / median seconds per update; train: updates between its first and last"
    echo "metric lines after pretraining, over the wall time between them."
    echo
    echo "| check | setting | wall time | updates/s | result | status |"
    echo "|---|---|---:|---:|---|---|"
    printf '%s\n' "${rows[@]}"
} | tee "$out"
echo
echo "gpu_check: table written to $out"
exit "$failed"
