#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds from scratch if
# needed, runs the C++ tests (ctest) and the Python tests (pytest).
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash "$KORTEX_ROOT/scripts/setup.sh" test
bash "$KORTEX_ROOT/scripts/build.sh"

echo "== C++ tests"
ctest --test-dir "$KORTEX_BUILD" --output-on-failure -j2

echo "== Python tests"
cd "$KORTEX_ROOT/python_bindings"
"$KORTEX_PYTHON" -m pytest -q tests

echo "== Sanitizers (ASan+UBSan, TSan) and fuzz smoke runs"
bash "$KORTEX_ROOT/scripts/sanitizers.sh"
