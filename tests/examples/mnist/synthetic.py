"""A small, learnable stand-in for MNIST, written as the four IDX files (no network)."""

from pathlib import Path

import numpy as np

from jopt.examples.mnist.data import MNIST, write_idx


def synthetic_mnist(n_train: int = 500, n_test: int = 100, seed: int = 0) -> MNIST:
    """Digits drawn as a bright 7x7 square whose place encodes the label, over noise.

    A linear model separates the classes, so a few steps of training reach high
    accuracy; sizes that are not multiples of common batch sizes exercise the short
    last batch.
    """
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 90, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 4)
            images[i, 2 + 7 * row : 9 + 7 * row, 1 + 7 * col : 8 + 7 * col] = 230
        return images, labels

    train_images, train_labels = draw(n_train)
    test_images, test_labels = draw(n_test)
    return MNIST(train_images, train_labels, test_images, test_labels)


def write_mnist(folder: Path, mnist: MNIST) -> Path:
    """Writes ``mnist`` as the four IDX files ``load_mnist(folder)`` reads; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", mnist.train_images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", mnist.train_labels)
    write_idx(folder / "t10k-images-idx3-ubyte", mnist.test_images)
    write_idx(folder / "t10k-labels-idx1-ubyte", mnist.test_labels)
    return folder
