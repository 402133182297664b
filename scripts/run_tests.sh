#!/usr/bin/env bash
# The test command of CI and `make test`: ruff, mypy, then the whole pytest suite in two pytest-xdist
# workers (one per core of the CI machine; tests/conftest.py gives each one torch thread), in VENV_DIR; then
# the documentation site (mkdocs.yml, docs/) built with --strict, so a broken link or a page missing
# from the nav fails like a test.
#
#   scripts/run_tests.sh [VENV_DIR] [PYTEST_ARGS...]     (default .venv; set it up with setup_venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
shift $(( $# > 0 ? 1 : 0 ))
if [ ! -x "$VENV/bin/python" ]; then
    echo "run_tests: no virtual environment in $VENV; run scripts/setup_venv.sh $VENV first" >&2
    exit 2
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

ruff check src tests benchmarks scripts
mypy
python -m pytest -n 2 "$@"
docs_site=$(mktemp -d)
trap 'rm -rf "$docs_site"' EXIT
mkdocs build --strict --site-dir "$docs_site"
