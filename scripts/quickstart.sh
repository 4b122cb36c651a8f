#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains a network and shows
# the results.
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash "$KORTEX_ROOT/scripts/setup.sh" core
bash "$KORTEX_ROOT/scripts/build.sh"

echo
echo "== C++: training 784-256-128-10 on generated data"
"$KORTEX_BUILD/examples/train_synthetic" 5 256
