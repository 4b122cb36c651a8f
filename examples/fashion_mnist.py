"""The main job: train a Fashion-MNIST classifier, save it, load it in a
"server", and answer requests from 1, 2 and 4 Python threads.

    python examples/fashion_mnist.py [--epochs 10] [--model fashion_mnist.kdl]

Data: Debian's dataset-fashion-mnist package (scripts/setup.sh installs it).
Every compute call below runs in C++ with the GIL released; the progress bar
is driven from the training loop's batch callback.
"""

import argparse
import concurrent.futures
import sys
import time

import numpy as np

import kortexdl

try:
    from tqdm import tqdm
except ImportError:  # the bar is optional
    tqdm = None


def train(args, x_train, y_train, x_test, y_test):
    network = kortexdl.Network(
        [784, 256, 128, 10],
        hidden_activation="relu",
        output_activation="softmax",
        optimizer="adam",
        seed=args.seed,
    )
    print(f"{network!r}\n")
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    every = 20
    bar = None

    def on_batch_end(epoch, step, loss):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch:2d}", leave=False, file=sys.stdout)
        bar.update(every if step % every == 0 else step % every)
        bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch_end(record):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        print(
            f"epoch {record.epoch:2d}  loss {record.loss:.4f}  train acc {record.accuracy:.4f}  "
            f"test loss {record.validation_loss:.4f}  test acc {record.validation_accuracy:.4f}  "
            f"{record.seconds:.2f} s",
            flush=True,
        )

    use_bar = tqdm is not None and sys.stdout.isatty()
    history = network.fit(
        x_train,
        y_train,
        kortexdl.LossType.CrossEntropy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        schedule="cosine",
        seed=args.seed,
        validation_data=(x_test, y_test),
        on_epoch_end=on_epoch_end,
        on_batch_end=on_batch_end if use_bar else None,
        batch_callback_every=every if use_bar else None,
    )
    seconds = [r.seconds for r in history.epochs]
    print(f"\ntrained {len(seconds)} epochs in {sum(seconds):.1f} s ({np.median(seconds):.2f} s per epoch, median)")
    return network


def serve(network, x_test, threads, request_rows=32, rounds=3):
    """Rows per second answered by `threads` Python threads sharing one network."""
    requests = [x_test[i : i + request_rows] for i in range(0, len(x_test) - request_rows + 1, request_rows)]

    def worker(part):
        for _ in range(rounds):
            for request in requests[part::threads]:
                network.forward(request)

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(worker, range(threads)))
    return len(requests) * request_rows * rounds / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default="fashion_mnist.kdl")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()

    (x_train, y_train), (x_test, y_test) = kortexdl.datasets.fashion_mnist(args.data)
    print(f"Fashion-MNIST: {len(x_train)} training and {len(x_test)} test images, {x_train.shape[1]} pixels")
    print(f"KortexDL {kortexdl.__version__}, {kortexdl.backend_name()} backend, {kortexdl.get_num_threads()} threads\n")

    network = train(args, x_train, y_train, x_test, y_test)
    network.save(args.model)
    served = kortexdl.Network.load(args.model)
    served.enable_thread_safety(True)
    accuracy = served.score(x_test, y_test)
    print(f"saved to {args.model}, loaded back: test accuracy {accuracy:.4f}")

    print("\nserving the test set in requests of 32 rows from Python threads:")
    baseline = None
    for threads in (1, 2, 4):
        rate = serve(served, x_test, threads)
        baseline = baseline or rate
        print(f"  {threads} thread(s): {rate:10.0f} rows/s  ({rate / baseline:.2f}x one thread)")
    return 0 if accuracy >= 0.80 else 1


if __name__ == "__main__":
    sys.exit(main())
