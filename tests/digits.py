"""The digits example's data for pipeline runs: its calibration set, made the way
examples/digits/train.py makes it for the committed INT8 model (512 training digits, seeded), and
its labelled test set (the golden set's inputs and labels, without the reference outputs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from tests.repo import REPO

DIGITS = REPO / "examples" / "digits"


def _train():
    spec = importlib.util.spec_from_file_location("digits_train", DIGITS / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def calibration(folder: Path) -> Path:
    """The example's calibration set in `folder` (.npy batches of training digits)."""
    train = _train()
    folder.mkdir(parents=True, exist_ok=True)
    x_train = train.load_split()[0]
    train.write_calibration(str(folder), x_train)
    return folder


def labelled(path: Path) -> Path:
    """The 450 test digits with their labels: what the accuracy gate measures on."""
    with np.load(DIGITS / "digits_golden.npz") as golden:
        np.savez(path, input=golden["input"], labels=golden["labels"])
    return path
