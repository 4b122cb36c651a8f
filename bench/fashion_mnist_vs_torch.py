"""Time per Fashion-MNIST epoch, KortexDL against PyTorch, same machine, same
run, same network and recipe: 784-256-128-10 (ReLU, softmax cross-entropy),
Adam, learning rate 1e-3 with a cosine schedule, batch 128, shuffled, 10
epochs; the test accuracy after the last epoch is reported beside the time.

    .venv/bin/python bench/fashion_mnist_vs_torch.py [--epochs 10] [--rounds 3]

Each framework trains in a fresh subprocess (so neither's OpenMP settings
leak into the other), rounds alternate KortexDL and PyTorch, and PyTorch runs
both with 1 intra-op thread and with all cores; the faster is its figure.
Medians over rounds of the median epoch time. Not a test: timing is noisy on
shared machines.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

FASHION = "/usr/share/datasets/fashion-mnist"

KORTEX = r"""
import json, sys, time
import numpy as np
import kortexdl
epochs = int(sys.argv[1])
(x, y), (xt, yt) = kortexdl.datasets.fashion_mnist()
net = kortexdl.Network([784, 256, 128, 10], output_activation="softmax", optimizer="adam", seed=1)
h = net.fit(x, y, kortexdl.LossType.CrossEntropy, epochs=epochs, batch_size=128, learning_rate=1e-3,
            schedule="cosine", seed=1)
print(json.dumps({"epoch_seconds": [r.seconds for r in h.epochs], "accuracy": net.score(xt, yt),
                  "threads": kortexdl.get_num_threads()}))
"""

TORCH = r"""
import json, sys, time
import numpy as np
import torch
import kortexdl.datasets  # the same reader, so both see identical arrays
epochs, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(1)
(x, y), (xt, yt) = kortexdl.datasets.fashion_mnist()
x, y, xt, yt = map(torch.from_numpy, (x, y.astype(np.int64), xt, yt.astype(np.int64)))
net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
                          torch.nn.Linear(128, 10))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
steps = (len(x) + 127) // 128
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps)
loss_fn = torch.nn.CrossEntropyLoss()
seconds = []
for epoch in range(epochs):
    t0 = time.perf_counter()
    order = torch.randperm(len(x))
    for s in range(steps):
        idx = order[s * 128:(s + 1) * 128]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step()
    seconds.append(time.perf_counter() - t0)
with torch.no_grad():
    accuracy = (net(xt).argmax(1) == yt).float().mean().item()
print(json.dumps({"epoch_seconds": seconds, "accuracy": accuracy, "threads": threads}))
"""


def run(code, *args):
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(FASHION, "train-images-idx3-ubyte.gz")):
        sys.exit("Fashion-MNIST is missing: apt-get install dataset-fashion-mnist")
    cores = os.cpu_count() or 1
    results = {"kortexdl": [], "torch_1": [], f"torch_{cores}": []}
    for _ in range(args.rounds):
        results["kortexdl"].append(run(KORTEX, args.epochs))
        results["torch_1"].append(run(TORCH, args.epochs, 1))
        if cores > 1:
            results[f"torch_{cores}"].append(run(TORCH, args.epochs, cores))

    def summary(runs):
        per_run = [statistics.median(r["epoch_seconds"]) for r in runs]
        return statistics.median(per_run), min(per_run), max(per_run), statistics.median(r["accuracy"] for r in runs)

    # Training FLOP per epoch: forward, weight gradients, and input gradients
    # of every layer but the first (which has no use for one).
    sizes = [784, 256, 128, 10]
    per_row = sum(2 * a * b for a, b in zip(sizes, sizes[1:]))
    flops = 60000 * (3 * per_row - 2 * 784 * 256)
    print(f"Fashion-MNIST, 784-256-128-10, Adam + cosine, batch 128, {args.epochs} epochs, {args.rounds} rounds")
    print(f"{'framework':<22}{'s/epoch':>10}{'min-max':>16}{'test acc':>10}{'GFLOP/s':>10}")
    rows = {}
    for name, runs in results.items():
        if not runs:
            continue
        med, lo, hi, acc = summary(runs)
        rows[name] = (med, acc)
        label = "kortexdl" if name == "kortexdl" else f"pytorch, {name.split('_')[1]} thread(s)"
        print(f"{label:<22}{med:>10.3f}{lo:>8.3f}-{hi:<7.3f}{acc:>10.4f}{flops / med / 1e9:>10.1f}")
    best_torch = min((v for k, v in rows.items() if k.startswith("torch")), key=lambda v: v[0])
    print(f"\nkortexdl is {best_torch[0] / rows['kortexdl'][0]:.2f}x faster per epoch than PyTorch at its best "
          f"thread count, at test accuracy {rows['kortexdl'][1]:.4f} vs {best_torch[1]:.4f}")
    print(f"training FLOP per epoch: {flops / 1e9:.1f} G")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"flops_per_epoch": flops, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
