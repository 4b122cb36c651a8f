# Sourced by the other scripts: where things live, and the Python to use.
# Debian's /usr/bin/python3 sees Debian's numpy/pybind11/pytest; the python3
# first on PATH may be another interpreter that does not, so the project
# works in a venv made from Debian's with --system-site-packages.
KORTEX_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KORTEX_BUILD="${KORTEX_BUILD:-$KORTEX_ROOT/build}"
KORTEX_VENV="${KORTEX_VENV:-$KORTEX_ROOT/.venv}"
KORTEX_PYTHON="$KORTEX_VENV/bin/python"
export KORTEX_ROOT KORTEX_BUILD KORTEX_VENV KORTEX_PYTHON
