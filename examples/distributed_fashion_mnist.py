#!/usr/bin/env python3
"""Fashion-MNIST on several processes with kortexdl.distributed (MPI).

    # 2 processes on this machine
    mpirun -np 2 python3 examples/distributed_fashion_mnist.py
    # 4 processes on two machines (the same paths on both; see docs/distributed.md)
    mpirun -np 4 --hostfile hosts python3 examples/distributed_fashion_mnist.py
    # one process, no MPI launcher: the same script, a world of one
    python3 examples/distributed_fashion_mnist.py

Every rank reads the dataset (Debian's dataset-fashion-mnist package, or
--data DIR), keeps its shard of the training rows (kortexdl.distributed.shard,
the same split on every rank) and trains a 784-256-128-10 network with
train_distributed: each step every rank computes the gradient of its
--batch-size rows, one MPI_Allreduce sums the gradients, and every rank applies
the same update. Rank 0 prints the progress and writes the model after every
epoch (--model); the test accuracy is evaluated over all ranks' shards of the
test set.

The effective batch is world_size x --batch-size. With --scale-lr (default)
the learning rate is multiplied by world_size (the linear scaling rule for
SGD), so a 4-rank run takes as large steps per row as a 1-process run.
"""

import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np

import kortexdl
from kortexdl import distributed as dist


def read_idx(path):
    """An IDX file (gzip'd or plain) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(directory, part):
    images = read_idx(os.path.join(directory, f"{part}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(directory, f"{part}-labels-idx1-ubyte.gz"))
    return (images.reshape(len(images), -1).astype(np.float32) / 255.0), labels.astype(np.int32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per rank per step")
    parser.add_argument("--lr", type=float, default=0.02, help="learning rate for one process")
    parser.add_argument("--no-scale-lr", dest="scale_lr", action="store_false",
                        help="use --lr as given instead of --lr x world_size")
    parser.add_argument("--model", default="fashion_mnist_distributed.kdl", help="written by rank 0")
    parser.add_argument("--limit", type=int, default=0, help="use only this many training rows (quick runs)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a collective may take before a rank gives up (default 300)")
    args = parser.parse_args()

    dist.init(timeout=args.timeout)
    rank, world = dist.rank(), dist.world_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"{dist.description()}; {kortexdl.get_num_threads()} thread(s) per rank")

    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "t10k")
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_mine, y_mine = dist.shard(x_train, y_train, seed=0)
    lr = args.lr * world if args.scale_lr else args.lr
    say(f"{len(x_train)} training rows, {len(x_mine)} on rank 0; effective batch {world} x {args.batch_size} = "
        f"{world * args.batch_size}; learning rate {lr:g}")

    net = kortexdl.Network([784, 256, 128, 10], output_activation="softmax", optimizer="momentum", seed=0)
    x_test_mine, y_test_mine = dist.shard(x_test, y_test, seed=0)

    def on_epoch_end(record):
        say(f"epoch {record.epoch}: loss {record.loss:.4f}, train accuracy {record.accuracy:.4f}, "
            f"validation accuracy {record.validation_accuracy:.4f}, {record.seconds:.1f} s")

    started = time.perf_counter()
    history = dist.train_distributed(
        net, x_mine, y_mine, "cross_entropy",
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=lr, seed=0,
        validation_data=(x_test_mine, y_test_mine),
        on_epoch_end=on_epoch_end if rank == 0 else None,
        checkpoint_path=args.model,
    )
    seconds = time.perf_counter() - started
    test = dist.evaluate(net, x_test_mine, y_test_mine, "cross_entropy")
    say(f"test accuracy {test.accuracy:.4f} (loss {test.loss:.4f}) over {test.samples} rows of all ranks")
    say(f"{seconds:.1f} s, {history.allreduce_seconds:.2f} s of it in allreduce on rank 0; "
        f"{history.global_rows * len(history) / seconds:.0f} rows/s; model written to {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
