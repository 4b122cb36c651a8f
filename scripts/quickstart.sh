#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains a Fashion-MNIST
# classifier, saves and reloads it, and serves it from several threads.
#   scripts/quickstart.sh [--epochs N]   (other options: examples/fashion_mnist.py --help)
set -euo pipefail
source "$(dirname "$0")/env.sh"

bash "$KORTEX_ROOT/scripts/setup.sh" core
bash "$KORTEX_ROOT/scripts/build.sh"

mkdir -p "$KORTEX_ROOT/models"
echo
echo "== Fashion-MNIST: 784-256-128-10, Adam, cosine schedule"
"$KORTEX_PYTHON" "$KORTEX_ROOT/examples/fashion_mnist.py" --model "$KORTEX_ROOT/models/fashion_mnist.kdl" "$@"
