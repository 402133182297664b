#!/usr/bin/env bash
# Create a virtual environment and install twm into it, for `make test`, `make demo` and .ci/run.
#
#   scripts/setup_venv.sh [VENV_DIR]          (default .venv)
#
# 1. Creates VENV_DIR with python3 (PYTHON=... to choose another interpreter) if it has no Python.
# 2. Installs torch first, so that installing the project does not pull a torch build we did not
#    choose: without a GPU the CPU build (torch==2.13.0 here; TORCH_CPU_SPEC=... to change it), with a
#    GPU (`nvidia-smi` present and working) plain `torch` from the default index, which is a CUDA build.
#    TWM_TORCH=cpu|gpu|auto (default auto) overrides the detection; .ci/run uses cpu.
# 3. pip install -e ".[dev,report,cluster,viz,envs,docs,wandb,mlflow]" (TWM_EXTRAS=... to change the extras).
#
# Idempotent: VENV_DIR/.twm-setup-stamp records the hash of pyproject.toml, the extras and the torch
# flavour of the last successful setup; when it matches, nothing is done (well under a second). Without
# a matching stamp (an environment set up by hand, a changed pyproject.toml) the script checks what is
# installed against pyproject.toml and installs only when something is missing or too old.
# TWM_SETUP_FORCE=1 runs the installs whatever the stamp says.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS=${TWM_EXTRAS:-dev,report,cluster,viz,envs,docs,wandb,mlflow}
TORCH_CPU_SPEC=${TORCH_CPU_SPEC:-torch==2.13.0}
TORCH_GPU_SPEC=${TORCH_GPU_SPEC:-torch}
STAMP="$VENV/.twm-setup-stamp"

say() { echo "setup_venv: $*"; }

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

case "${TWM_TORCH:-auto}" in
    cpu) flavour=cpu ;;
    gpu) flavour=gpu ;;
    auto) if has_gpu; then flavour=gpu; else flavour=cpu; fi ;;
    *) say "TWM_TORCH must be cpu, gpu or auto; got '${TWM_TORCH}'" >&2; exit 2 ;;
esac
if [ "$flavour" = gpu ]; then torch_spec=$TORCH_GPU_SPEC; else torch_spec=$TORCH_CPU_SPEC; fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

want="pyproject=$("$PY" -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())') extras=$EXTRAS torch=$flavour:$torch_spec"
if [ "${TWM_SETUP_FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    say "$VENV is up to date (stamp $STAMP; TWM_SETUP_FORCE=1 to reinstall)"
    exit 0
fi

# What is missing from VENV: exit 0 nothing, 3 torch (and maybe more), 1 something else. The
# requirements come from pyproject.toml itself, so a dependency added since the last install counts.
check() {
    "$PY" - "$EXTRAS" "$VENV" <<'EOF'
import importlib.metadata as md
import importlib.util
import os
import sys
import tomllib

try:
    from packaging.requirements import Requirement
except ImportError:  # pip vendors it
    from pip._vendor.packaging.requirements import Requirement

extras = [e for e in sys.argv[1].split(",") if e]
venv = sys.argv[2]
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in extras:
    reqs += project.get("optional-dependencies", {}).get(extra, [])
missing, torch_missing = [], False
for text in reqs:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    try:
        version = md.version(req.name)
    except md.PackageNotFoundError:
        version = None
    if version is None or not req.specifier.contains(version, prereleases=True):
        missing.append(f"{text} (installed: {version or 'none'})")
        torch_missing |= req.name.lower() == "torch"
try:
    installed = md.version(project["name"])
except md.PackageNotFoundError:
    installed = None
spec = importlib.util.find_spec("twm")
here = os.path.realpath(os.path.join("src", "twm"))
if installed != project["version"] or spec is None or spec.origin is None or \
        os.path.realpath(os.path.dirname(spec.origin)) != here:
    missing.append(f"twm {project['version']} installed editable from {here}")
elif not os.path.exists(os.path.join(venv, "bin", "twm")):
    missing.append("the twm command")
for item in missing:
    print(f"setup_venv: missing: {item}")
sys.exit(3 if torch_missing else 1 if missing else 0)
EOF
}

status=0
check || status=$?
if [ "$status" = 0 ]; then
    say "$VENV already has everything pyproject.toml asks for; nothing installed"
else
    pip_install() { "$PY" -m pip install --quiet "$@"; }
    say "installing into $VENV (pip, quiet)"
    pip_install --upgrade pip
    if [ "$status" = 3 ]; then
        # torch first, so that installing the project does not pull a build we did not choose.
        say "torch: $torch_spec ($flavour)"
        pip_install "$torch_spec"
    fi
    say "twm: pip install -e \".[$EXTRAS]\""
    pip_install -e ".[$EXTRAS]"
    check || { say "still missing something after installing (see above)" >&2; exit 1; }
fi
if [ "$flavour" = gpu ] && ! "$PY" -c 'import sys, torch; sys.exit(torch.version.cuda is None)' 2>/dev/null; then
    say "warning: a GPU is present but the installed torch is a CPU build; to switch:" >&2
    say "  $PY -m pip install --force-reinstall '$TORCH_GPU_SPEC'" >&2
fi
echo "$want" >"$STAMP"
say "done; stamp $STAMP"
