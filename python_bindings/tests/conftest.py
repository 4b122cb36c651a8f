"""Shared fixtures for the kortexdl test suite."""

import signal

import numpy as np
import pytest

import kortexdl


@pytest.fixture
def single_thread():
    """Every library call runs on one thread (deterministic, and leaves a core
    free for the test's own Python threads); the budget is restored after."""
    previous = kortexdl.get_num_threads()
    kortexdl.set_num_threads(1)
    try:
        yield
    finally:
        kortexdl.set_num_threads(previous)


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler for the test, whatever the process
    inherited: a job started in the background by a non-interactive shell
    (as CI scripts often are) starts with SIGINT ignored, Python then
    installs no handler, and _thread.interrupt_main() does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def regression_data(rng, rows, inputs, outputs):
    """A learnable regression problem: targets are a fixed linear map of the inputs."""
    x = rng.standard_normal((rows, inputs)).astype(np.float32)
    w = rng.standard_normal((inputs, outputs)).astype(np.float32) / np.sqrt(inputs)
    return x, (x @ w).astype(np.float32)
