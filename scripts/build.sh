#!/usr/bin/env bash
# Configures and builds everything (library, tests, benchmarks, examples and
# the Python module) into build/, and makes `import kortexdl` work in .venv.
set -euo pipefail
source "$(dirname "$0")/env.sh"

cmake -S "$KORTEX_ROOT" -B "$KORTEX_BUILD" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DKORTEX_BUILD_PYTHON=ON \
  -DPython3_EXECUTABLE=/usr/bin/python3 \
  "$@" >/dev/null
cmake --build "$KORTEX_BUILD" -j"$(nproc)"

if [ ! -x "$KORTEX_PYTHON" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$KORTEX_VENV"
fi
# The package is used in place from python_bindings/ (the build puts the
# extension module there), like an editable install.
site=$("$KORTEX_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$KORTEX_ROOT/python_bindings" > "$site/kortexdl-dev.pth"
