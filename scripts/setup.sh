#!/usr/bin/env bash
# Installs the Debian packages KortexDL needs, only those missing.
#   scripts/setup.sh            build + run the main job and the test suite
#   scripts/setup.sh bench      also PyTorch and matplotlib, for benchmarks
#   scripts/setup.sh all        everything
set -euo pipefail

core=(
  build-essential cmake ninja-build pkg-config
  libdnnl-dev libopenblas-dev libnuma-dev zlib1g-dev
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
  pybind11-dev python3-pybind11 python3-dev python3-venv python3-pip python3-setuptools python3-wheel
  python3-numpy python3-pytest python3-tqdm
  dataset-fashion-mnist
)
testing=(
  python3-hypothesis python3-sklearn
  clang libomp-dev libclang-rt-14-dev
  openmpi-bin libopenmpi-dev python3-mpi4py
)
bench=(python3-torch python3-matplotlib linux-perf)

wanted=("${core[@]}")
for profile in "${@:-test}"; do
  case "$profile" in
    core) ;;
    test) wanted+=("${testing[@]}") ;;
    bench) wanted+=("${bench[@]}") ;;
    all) wanted+=("${testing[@]}" "${bench[@]}") ;;
    *) echo "setup.sh: unknown profile '$profile' (core, test, bench, all)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#wanted[@]} packages present"
  exit 0
fi
echo "setup: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
