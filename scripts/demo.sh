#!/usr/bin/env bash
# `make demo`: train the built-in game catch with the quick preset, dream a GIF, print the score.
#
#   scripts/demo.sh VENV_DIR RUN_DIR [TWM_TRAIN_ARGS...]
#
# RUN_DIR already finished (eval/final.json): no training, the score is printed (and the GIF made if
# it is missing). RUN_DIR with a resume checkpoint: `twm train --resume` continues it (extra train
# arguments are then ignored: a resumed run keeps its config.yaml). A run folder that died before its
# first checkpoint is moved aside to RUN_DIR.failed-<time> and the run starts again.
# Extra arguments go to `twm train` after the defaults, so they override them
# (e.g. --preset smoke, --set train.total_steps=400). DREAM_ARGS: arguments of `twm dream`.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: scripts/demo.sh VENV_DIR RUN_DIR [TWM_TRAIN_ARGS...]" >&2
    exit 2
fi
VENV=$1
RUN_DIR=$2
shift 2
DREAM_ARGS=${DREAM_ARGS:---horizon 20 --starts 4}
PY="$VENV/bin/python"
TWM=("$PY" -m twm.cli)
GIF="$RUN_DIR/dream.gif"
start=$(date +%s)

say() { echo "demo: $*"; }

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    device=""  # train.device=auto: the GPU
    say "GPU found: the device is chosen automatically"
else
    device="--device cpu"  # a word list: expanded unquoted below
    say "no GPU: training on the CPU"
fi

# What the folder holds: finished | start | resume | restart | busy <who> | foreign.
state=$("$PY" - "$RUN_DIR" <<'EOF'
import sys

from twm.run_dir import RunDir, RunLock
from twm.launch.plan import Action, plan_run

folder = RunDir(sys.argv[1])
action = plan_run(folder.path)
holder = folder.holder()
if action in (Action.RESUME, Action.RESTART) and holder is not None and not RunLock(folder.path).is_stale(holder):
    print(f"busy process {holder.get('pid', '?')} on host {holder.get('host', '?')}")
elif action is Action.SKIP:
    print("finished")
elif action is Action.RESTART and not folder.config.is_file():
    print("foreign")
else:
    print(action.value)
EOF
)

case "$state" in
    finished)
        say "$RUN_DIR holds a finished run: not training again"
        ;;
    start)
        say "training: twm train --game catch --preset quick --run-dir $RUN_DIR $device $*"
        "${TWM[@]}" train --game catch --preset quick --run-dir "$RUN_DIR" $device "$@"
        ;;
    resume)
        if [ $# -gt 0 ]; then
            say "note: resuming keeps the run's config.yaml; ignoring the extra arguments: $*"
        fi
        say "$RUN_DIR holds an unfinished run: twm train --resume $RUN_DIR"
        "${TWM[@]}" train --resume "$RUN_DIR" $device
        ;;
    restart)
        aside=$("$PY" -c 'import sys; from twm.launch.plan import move_aside; print(move_aside(sys.argv[1]))' "$RUN_DIR")
        say "$RUN_DIR stopped before its first checkpoint; moved it to $aside and starting again"
        "${TWM[@]}" train --game catch --preset quick --run-dir "$RUN_DIR" $device "$@"
        ;;
    busy*)
        say "$RUN_DIR is being trained right now by ${state#busy }; wait for it or choose another DEMO_DIR" >&2
        exit 1
        ;;
    foreign)
        say "$RUN_DIR is not empty and not a twm run folder; choose another DEMO_DIR" >&2
        exit 2
        ;;
    *)
        say "could not inspect $RUN_DIR" >&2
        exit 1
        ;;
esac

if [ -f "$GIF" ]; then
    say "dream GIF already there: $GIF"
else
    say "dreaming: twm dream $RUN_DIR --out $GIF $DREAM_ARGS $device"
    # shellcheck disable=SC2086  # DREAM_ARGS and device are lists of words
    "${TWM[@]}" dream "$RUN_DIR" --out "$GIF" $DREAM_ARGS $device
fi

"$PY" - "$RUN_DIR" "$GIF" "$(( $(date +%s) - start ))" <<'EOF'
import json
import os
import sys

run_dir, gif, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
final = json.load(open(os.path.join(run_dir, "eval", "final.json")))
extra = ""
if final.get("game") == "catch":
    extra = " (random play scores -5, a perfect player 10)"
elif final.get("hns") is not None:
    extra = f" (human-normalized {final['hns']:.3f})"
print()
print(f"demo: {final['game']}, preset {final.get('preset', '?')}, seed {final['seed']}: final score "
      f"{final['mean']:.2f} ± {final['std']:.2f} over {final['episodes']} episodes{extra}")
print(f"demo: {final['interactions']} interactions, {final['updates']} updates, "
      f"training took {final['wall_time_s'] / 60:.1f} min on {final['device']}; this command {seconds / 60:.1f} min")
print(f"demo: run folder {os.path.abspath(run_dir)}")
print(f"demo: dream GIF  {os.path.abspath(gif)}")
EOF
