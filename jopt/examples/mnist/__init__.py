"""MNIST example: data loading, a flax model, and the functional training cycle."""
