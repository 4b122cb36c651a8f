"""Tests of the kortexdl command-line tool (docs/cli.md).

Run by ctest (tools/tests/CMakeLists.txt), one ctest entry per test class:
    /usr/bin/python3 test_cli.py -v WorkflowTests
Environment: KORTEXDL_CLI is the program; KORTEXDL_BUILD_DIR the build tree
(for the install test). Data is generated here: CSV and IDX written by
hand, NPY with numpy.
"""
import gzip
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import unittest

import numpy as np

CLI = os.environ.get("KORTEXDL_CLI", "kortexdl")
BUILD_DIR = os.environ.get("KORTEXDL_BUILD_DIR", "")
EXPECTED_VERSION = os.environ.get("KORTEXDL_VERSION", "")


def run(*args, check=None, cwd=None):
    """Runs the tool; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=60)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"kortexdl {' '.join(map(str, args))}: exit {proc.returncode}, expected {check}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc.returncode, proc.stdout, proc.stderr


def blobs(rows, seed):
    """Three well separated classes in 4 dimensions (float32), labels int."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=rows)
    centres = np.array([[2, 0, 0, 1], [-2, 2, 0, -1], [0, -2, 2, 0]], dtype=np.float32)
    inputs = (centres[labels] + 0.4 * rng.standard_normal((rows, 4))).astype(np.float32)
    return inputs, labels


def write_csv(path, inputs, labels=None, header=True):
    """By hand: %.9g round-trips float32, so the CSV holds the NPY's exact values."""
    with open(path, "w") as f:
        if header:
            names = [f"x{i}" for i in range(inputs.shape[1])] + (["label"] if labels is not None else [])
            f.write(",".join(names) + "\n")
        for i, row in enumerate(inputs):
            fields = ["%.9g" % v for v in row]
            if labels is not None:
                fields.append(str(int(labels[i])))
            f.write(",".join(fields) + "\n")


def write_idx(path, array, compress):
    """IDX by hand: 00 00 08 ndim, big-endian u32 dimensions, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    data = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    if compress:
        data = gzip.compress(data)
    with open(path, "wb") as f:
        f.write(data)


class Case(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="kortexdl-cli-test-")
        cls.inputs, cls.labels = blobs(240, seed=3)
        cls.csv = cls.path("blobs.csv")
        write_csv(cls.csv, cls.inputs, cls.labels)
        cls.features_csv = cls.path("features.csv")
        write_csv(cls.features_csv, cls.inputs, None, header=False)
        cls.x = cls.path("x.npy")
        cls.y = cls.path("y.npy")
        np.save(cls.x, cls.inputs)
        np.save(cls.y, cls.labels.astype(np.int64))
        # Regression: two float targets per row.
        cls.t = cls.path("t.npy")
        targets = np.stack([cls.inputs[:, 0] - cls.inputs[:, 1], 0.5 * cls.inputs[:, 2]], axis=1)
        np.save(cls.t, targets.astype(np.float32))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def train(self, *args, output, check=0):
        return run("train", *args, "--seed", 7, "-o", output, check=check)


class WorkflowTests(Case):
    """Train on CSV and NPY, then info, evaluate, predict, resume."""

    def test_csv_train_info_evaluate_predict(self):
        model = self.path("csv.kdl")
        _, out, err = self.train("--csv", self.csv, "--hidden", 16, "--epochs", 20, "--lr", 0.01, output=model)
        self.assertEqual(err, "")
        self.assertIn("network 4-16-3", out)
        epoch_lines = [line for line in out.splitlines() if line.startswith("epoch")]
        self.assertEqual(len(epoch_lines), 20)
        self.assertIn("loss", epoch_lines[0])
        self.assertIn("acc", epoch_lines[0])
        self.assertNotIn("\r", out)  # not a terminal: plain lines, no progress bar
        self.assertTrue(os.path.exists(model))

        _, out, _ = run("info", model, check=0)
        self.assertIn("4-16-3", out)
        self.assertIn("relu hidden, softmax output", out)
        self.assertIn("131", out)  # 4*16 + 16 + 16*3 + 3 parameters
        self.assertIn("optimizer state   saved", out)
        self.assertIn("seed              7 (set explicitly)", out)
        self.assertIn("backend", out)
        self.assertIn("NUMA", out)
        info = json.loads(run("info", model, "--json", check=0)[1])
        self.assertEqual(info["sizes"], [4, 16, 3])
        self.assertEqual(info["parameters"], 131)
        self.assertEqual(info["optimizer"]["kind"], "adam")
        self.assertTrue(info["optimizer_state"])
        self.assertEqual(info["optimizer_step"], 20 * 8)  # 240 rows / batch 32 = 8 steps an epoch
        self.assertEqual(info["seed"], 7)
        self.assertEqual(info["file_size"], os.path.getsize(model))
        self.assertGreaterEqual(info["machine"]["threads"], 1)

        _, out, _ = run("evaluate", "-m", model, "--csv", self.csv, check=0)
        self.assertIn("samples   240", out)
        result = json.loads(run("evaluate", "-m", model, "--csv", self.csv, "--json", check=0)[1])
        self.assertEqual(result["samples"], 240)
        self.assertEqual(result["loss_type"], "cross_entropy")
        self.assertGreater(result["accuracy"], 0.9)

        probabilities = self.path("p.npy")
        run("predict", "-m", model, "--csv", self.csv, "-o", probabilities, check=0)
        p = np.load(probabilities)
        self.assertEqual(p.shape, (240, 3))
        self.assertEqual(p.dtype, np.float32)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)  # softmax rows

        # The same rows from an NPY file and from a CSV without a label
        # column give the same outputs (the CSV holds the exact float32 values).
        for source in (["--npy", self.x], ["--csv", self.features_csv]):
            other = self.path("p2.npy")
            run("predict", "-m", model, *source, "-o", other, check=0)
            np.testing.assert_array_equal(np.load(other), p)

        classes_csv = self.path("classes.csv")
        _, out, _ = run("predict", "-m", model, "--npy", self.x, "--classes", "-o", classes_csv, check=0)
        self.assertIn("240 class indices", out)
        with open(classes_csv) as f:
            classes = np.array([int(line) for line in f.read().split()])
        np.testing.assert_array_equal(classes, p.argmax(axis=1))
        self.assertAlmostEqual(float((classes == self.labels).mean()), result["accuracy"], places=6)

        classes_npy = self.path("classes.npy")
        run("predict", "-m", model, "--npy", self.x, "--classes", "-o", classes_npy, check=0)
        np.testing.assert_array_equal(np.load(classes_npy), classes)

        # CSV outputs on standard output, one row per input.
        _, out, _ = run("predict", "-m", model, "--npy", self.x, "-o", "-", check=0)
        rows = [list(map(float, line.split(","))) for line in out.splitlines()]
        np.testing.assert_allclose(np.array(rows), p, rtol=1e-6)

    def test_npy_labels_and_regression(self):
        model = self.path("npy.kdl")
        self.train("--npy", self.x, self.y, "--sizes", "auto,8,auto", "--epochs", 15, "--lr", 0.01,
                   "--optimizer", "momentum", "--schedule", "cosine", output=model)
        info = json.loads(run("info", model, "--json", check=0)[1])
        self.assertEqual(info["sizes"], [4, 8, 3])
        self.assertEqual(info["optimizer"]["kind"], "momentum")
        result = json.loads(run("evaluate", "-m", model, "--npy", self.x, self.y, "--json", check=0)[1])
        self.assertGreater(result["accuracy"], 0.9)

        regression = self.path("regression.kdl")
        _, out, _ = self.train("--npy", self.x, self.t, "--hidden", 16, "--epochs", 40, "--lr", 0.01,
                               "--validation-split", 0.25, output=regression)
        self.assertIn("loss mse", out)
        self.assertIn("val_loss", out)
        self.assertIn("180 for training, 60 for validation", out)
        info = json.loads(run("info", regression, "--json", check=0)[1])
        self.assertEqual(info["sizes"], [4, 16, 2])
        self.assertEqual(info["output_activation"], "linear")
        result = json.loads(run("evaluate", "-m", regression, "--npy", self.x, self.t, "--json", check=0)[1])
        self.assertEqual(result["loss_type"], "mse")
        self.assertIsNone(result["accuracy"])
        self.assertLess(result["loss"], 0.2)
        out_path = self.path("r.npy")
        run("predict", "-m", regression, "--npy", self.x, "-o", out_path, check=0)
        self.assertEqual(np.load(out_path).shape, (240, 2))

    def test_csv_regression_and_binary(self):
        path = self.path("reg.csv")
        with open(path, "w") as f:
            f.write("target,a,b\n")
            for i, row in enumerate(self.inputs):
                f.write("%.9g,%.9g,%.9g\n" % (row[0] + row[1], row[0], row[1]))
        model = self.path("reg.kdl")
        self.train("--csv", path, "--label-column", 0, "--regression", "--hidden", 8, "--epochs", 5, output=model)
        self.assertEqual(json.loads(run("info", model, "--json", check=0)[1])["sizes"], [2, 8, 1])

        binary = self.path("binary.csv")
        write_csv(binary, self.inputs, (self.labels == 0).astype(int))
        model = self.path("binary.kdl")
        self.train("--csv", binary, "--loss", "binary_cross_entropy", "--hidden", 8, "--epochs", 20, "--lr", 0.01,
                   output=model)
        info = json.loads(run("info", model, "--json", check=0)[1])
        self.assertEqual(info["sizes"], [4, 8, 1])
        self.assertEqual(info["output_activation"], "sigmoid")
        result = json.loads(run("evaluate", "-m", model, "--csv", binary, "--json", check=0)[1])
        self.assertEqual(result["loss_type"], "binary_cross_entropy")
        self.assertGreater(result["accuracy"], 0.9)

    def test_resume(self):
        first = self.path("first.kdl")
        self.train("--npy", self.x, self.y, "--hidden", 8, "--epochs", 2, output=first)
        before = json.loads(run("info", first, "--json", check=0)[1])
        self.assertEqual(before["optimizer_step"], 16)
        loss_before = json.loads(run("evaluate", "-m", first, "--npy", self.x, self.y, "--json", check=0)[1])["loss"]

        second = self.path("second.kdl")
        _, out, _ = run("train", "--npy", self.x, self.y, "--resume", first, "--epochs", 3, "-o", second, check=0)
        self.assertIn("resumed from", out)
        after = json.loads(run("info", second, "--json", check=0)[1])
        self.assertEqual(after["optimizer_step"], 16 + 24)  # the optimizer state carried on
        self.assertEqual(after["sizes"], before["sizes"])
        self.assertEqual(after["seed"], before["seed"])
        loss_after = json.loads(run("evaluate", "-m", second, "--npy", self.x, self.y, "--json", check=0)[1])["loss"]
        self.assertLess(loss_after, loss_before)

        # Resuming over the same file, and the options that must agree with the model.
        run("train", "--npy", self.x, self.y, "--resume", second, "--epochs", 1, "-o", second, "-q", check=0)
        run("train", "--npy", self.x, self.y, "--resume", second, "--optimizer", "adam", "--hidden", 8,
            "--epochs", 1, "-o", second, "-q", check=0)
        code, _, err = run("train", "--npy", self.x, self.y, "--resume", second, "--optimizer", "sgd", "-o", second)
        self.assertEqual(code, 1)
        self.assertIn("does not match the model", err)

        lean = self.path("lean.kdl")
        run("train", "--npy", self.x, self.y, "--resume", second, "--epochs", 1, "--without-optimizer-state",
            "-o", lean, "-q", check=0)
        self.assertFalse(json.loads(run("info", lean, "--json", check=0)[1])["optimizer_state"])
        self.assertLess(os.path.getsize(lean), os.path.getsize(second))

    def test_idx_with_and_without_labels(self):
        rng = np.random.default_rng(5)
        labels = rng.integers(0, 2, size=64).astype(np.uint8)
        images = rng.integers(0, 60, size=(64, 3, 3)).astype(np.uint8)
        images[labels == 1, 1, :] = 250  # class 1 has a bright middle row
        paths = {}
        for compress in (False, True):
            suffix = ".gz" if compress else ""
            paths[compress] = (self.path("images.idx" + suffix), self.path("labels.idx" + suffix))
            write_idx(paths[compress][0], images, compress)
            write_idx(paths[compress][1], labels, compress)
        model = self.path("idx.kdl")
        _, out, _ = self.train("--idx", *paths[True], "--hidden", 8, "--epochs", 30, "--lr", 0.01, output=model)
        self.assertIn("64 rows x 9 features, 2 classes", out)
        result = json.loads(run("evaluate", "-m", model, "--idx", *paths[False], "--json", check=0)[1])
        self.assertGreater(result["accuracy"], 0.9)
        with_labels, images_only = self.path("a.npy"), self.path("b.npy")
        run("predict", "-m", model, "--idx", *paths[False], "-o", with_labels, check=0)
        for compress in (False, True):
            run("predict", "-m", model, "--idx", paths[compress][0], "-o", images_only, check=0)
            np.testing.assert_array_equal(np.load(images_only), np.load(with_labels))

    def test_progress_bar_and_early_stopping(self):
        model = self.path("bar.kdl")
        # Bytes, not text: universal newlines would turn the bar's \r into \n.
        proc = subprocess.run([CLI, "train", "--csv", self.csv, "--epochs", "2", "--batch-size", "8", "--progress",
                               "on", "-o", model], capture_output=True, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(b"\repoch 1/2 [", proc.stdout)
        self.assertIn(b"\033[K", proc.stdout)
        self.assertIn(b"30/30", proc.stdout)  # the bar reached the end of the epoch
        self.assertIn(b"\r\033[Kepoch 2/2  loss", proc.stdout)  # the bar is erased before the epoch line
        _, out, _ = self.train("--csv", self.csv, "--epochs", 2, "--quiet", output=model)
        self.assertEqual(out, "")
        # No improvement can beat a min_delta this large: the first epoch is
        # the best, and patience 2 stops the run after the third.
        _, out, _ = self.train("--csv", self.csv, "--epochs", 50, "--validation-split", 0.2, "--patience", 2,
                               "--min-delta", 1e9, "--optimizer", "sgd", "--schedule", "step", "--step-epochs", 5,
                               output=model)
        self.assertEqual(len([line for line in out.splitlines() if line.startswith("epoch")]), 3)
        self.assertIn("stopped early after epoch 3: best epoch 1", out)
        self.assertIn("its parameters restored", out)


class ExitCodeTests(Case):
    """Every exit code of docs/cli.md, each with one clear line on stderr."""

    def expect(self, code, *args, message=None):
        got, out, err = run(*args)
        self.assertEqual(got, code, f"kortexdl {' '.join(map(str, args))}\nstdout:\n{out}\nstderr:\n{err}")
        lines = err.splitlines()
        self.assertEqual(len(lines), 1, f"expected one line on stderr, got:\n{err}")
        self.assertTrue(lines[0].startswith("kortexdl"), lines[0])
        if message is not None:
            self.assertIn(message, lines[0])
        return out, err

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model = cls.path("m.kdl")
        run("train", "--csv", cls.csv, "--hidden", 4, "--epochs", 1, "-o", cls.model, "-q", check=0)

    def test_usage_errors_exit_1(self):
        out = self.path("never.kdl")
        self.expect(1, message="subcommand")
        self.expect(1, "frobnicate")
        self.expect(1, "train", "--csv", self.csv, message="--output is required")
        self.expect(1, "train", "--csv", self.csv, "--bogus", "-o", out)
        self.expect(1, "train", "-o", out, message="no data")
        self.expect(1, "train", "--csv", self.csv, "--npy", self.x, self.y, "-o", out, message="only one")
        self.expect(1, "train", "--csv", self.csv, "--optimizer", "rmsprop", "-o", out)
        self.expect(1, "train", "--csv", self.csv, "--epochs", 0, "-o", out, message="--epochs")
        self.expect(1, "train", "--csv", self.csv, "--lr", -1, "-o", out, message="--lr")
        self.expect(1, "train", "--csv", self.csv, "--sizes", "4,x,3", "-o", out, message="--sizes")
        self.expect(1, "train", "--csv", self.csv, "--sizes", "4,8,3", "--hidden", 8, "-o", out)
        self.expect(1, "train", "--npy", self.x, "-o", out, message="INPUTS TARGETS")
        self.expect(1, "train", "--label-column", 0, "--npy", self.x, self.y, "-o", out, message="--csv")
        self.expect(1, "evaluate", "--csv", self.csv, message="--model")
        self.expect(1, "predict", "-m", self.model, "--npy", self.x, "-o", self.path("p.txt"), message=".npy or .csv")
        self.expect(1, "info")
        self.assertFalse(os.path.exists(out))

    def test_file_errors_exit_2(self):
        out = self.path("never.kdl")
        self.expect(2, "train", "--csv", self.path("missing.csv"), "-o", out, message="missing.csv")
        ragged = self.path("ragged.csv")
        with open(ragged, "w") as f:
            f.write("1,2,0\n3,4\n")
        self.expect(2, "train", "--csv", ragged, "-o", out, message="line 2")
        garbage = self.path("garbage.kdl")
        with open(garbage, "wb") as f:
            f.write(b"not a model at all")
        self.expect(2, "info", garbage, message="garbage.kdl")
        self.expect(2, "evaluate", "-m", garbage, "--csv", self.csv)
        self.expect(2, "predict", "-m", garbage, "--npy", self.x, "-o", self.path("p.npy"))
        self.expect(2, "train", "--csv", self.csv, "--resume", garbage, "-o", out)
        truncated = self.path("truncated.kdl")
        with open(self.model, "rb") as f, open(truncated, "wb") as g:
            g.write(f.read()[:-9])
        self.expect(2, "info", truncated)
        short = self.path("short.npy")
        np.save(short, self.labels[:100].astype(np.int64))
        self.expect(2, "train", "--npy", self.x, short, "-o", out, message="rows")
        fractional = self.path("fractional.npy")
        np.save(fractional, np.full(240, 0.5, dtype=np.float32))
        self.expect(2, "train", "--npy", self.x, fractional, "-o", out, message="whole number")
        self.expect(2, "train", "--csv", self.csv, "-o", self.path("no/such/dir/m.kdl"), message="not a directory")
        self.expect(2, "train", "--fashion-mnist", self.path("no-such-dir"), "-o", out)
        self.assertFalse(os.path.exists(out))

    def test_invalid_arguments_exit_3(self):
        out = self.path("never.kdl")
        # Three classes in the data, two outputs in the network.
        self.expect(3, "train", "--csv", self.csv, "--sizes", "auto,8,2", "-o", out, message="label")
        # The model has three outputs; a label 5 is out of range.
        wrong = self.path("wrong_labels.npy")
        np.save(wrong, np.where(np.arange(240) == 17, 5, self.labels).astype(np.int64))
        self.expect(3, "evaluate", "-m", self.model, "--npy", self.x, wrong, message="label")
        # Data that does not fit the network.
        narrow = self.path("narrow.npy")
        np.save(narrow, self.inputs[:, :3])
        self.expect(3, "predict", "-m", self.model, "--npy", narrow, "-o", self.path("p.npy"), message="inputs")
        self.expect(3, "train", "--csv", self.csv, "--sizes", "5,8,3", "-o", out, message="5 inputs")
        self.expect(3, "train", "--csv", self.csv, "--validation-split", 1, "-o", out, message="validation_split")
        self.assertFalse(os.path.exists(out))

    def test_divergence_exits_4(self):
        out = self.path("never.kdl")
        self.expect(4, "train", "--npy", self.x, self.t, "--optimizer", "sgd", "--lr", "1e30", "--epochs", 20,
                    "-o", out, message="diverged")
        self.assertFalse(os.path.exists(out))


class InterruptTests(Case):
    """SIGINT stops training between batches: exit 130, saving only on request."""

    def interrupt(self, *extra):
        output = self.path("interrupted.kdl")
        if os.path.exists(output):
            os.remove(output)
        proc = subprocess.Popen([CLI, "train", "--csv", self.csv, "--epochs", "1000000", "--batch-size", "4",
                                 "--progress", "off", "-o", output, *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # Wait until an epoch has ended: fit is running, the handler is in place.
            seen = b""
            deadline = time.monotonic() + 20
            while b"\nepoch" not in b"\n" + seen and time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    seen += chunk
            self.assertIn(b"epoch", seen, "training never reported an epoch")
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.assertEqual(proc.returncode, 130, err.decode())
        lines = err.decode().splitlines()
        self.assertEqual(len(lines), 1, err.decode())
        self.assertIn("interrupted", lines[0])
        return output, lines[0]

    def test_sigint_saves_nothing_by_default(self):
        output, message = self.interrupt()
        self.assertIn("nothing saved", message)
        self.assertFalse(os.path.exists(output))

    def test_sigint_with_save_on_interrupt(self):
        output, message = self.interrupt("--save-on-interrupt")
        self.assertIn("saved", message)
        info = json.loads(run("info", output, "--json", check=0)[1])
        self.assertGreater(info["optimizer_step"], 0)


class HelpTests(unittest.TestCase):
    def test_help_and_version(self):
        _, out, err = run("--help", check=0)
        self.assertEqual(err, "")
        for word in ("train", "evaluate", "predict", "info", "Exit codes"):
            self.assertIn(word, out)
        _, out, _ = run("--version", check=0)
        self.assertTrue(out.startswith("kortexdl "), out)
        if EXPECTED_VERSION:
            self.assertIn(EXPECTED_VERSION, out)
        expected = {
            "train": ["--idx", "--csv", "--npy", "--fashion-mnist", "--sizes", "--hidden-activation",
                      "--output-activation", "--loss", "--optimizer", "--lr", "--epochs", "--batch-size",
                      "--schedule", "--validation-split", "--patience", "--seed", "--threads", "--numa-nodes",
                      "--output", "--resume", "--save-on-interrupt", "--label-column", "--regression"],
            "evaluate": ["--model", "--csv", "--npy", "--idx", "--loss"],
            "predict": ["--model", "--output", "--classes", "--npy", "--csv", "--idx"],
            "info": ["MODEL", "--json"],
        }
        for command, options in expected.items():
            _, out, _ = run(command, "--help", check=0)
            for option in options:
                self.assertIn(option, out, f"{command} --help lacks {option}")


class InstallTests(Case):
    """`cmake --install` puts kortexdl in bin/, and it finds the installed library."""

    def test_installed_program_runs(self):
        if not BUILD_DIR:
            self.skipTest("KORTEXDL_BUILD_DIR not set")
        prefix = self.path("prefix")
        subprocess.run(["cmake", "--install", BUILD_DIR, "--prefix", prefix], check=True, capture_output=True,
                       timeout=120)
        program = os.path.join(prefix, "bin", "kortexdl")
        self.assertTrue(os.access(program, os.X_OK))
        model = self.path("m.kdl")
        run("train", "--csv", self.csv, "--epochs", 1, "-o", model, "-q", check=0)
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        proc = subprocess.run([program, "info", model], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("4-128-3", proc.stdout)


if __name__ == "__main__":
    unittest.main()
