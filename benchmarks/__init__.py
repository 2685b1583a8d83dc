"""Benchmarks: jopt against optax and torch.optim, step by step and end to end.

``python -m benchmarks.step`` measures optimizer step time, compile time and step
memory on several parameter layouts, plus whole training steps; see
``benchmarks/README.md`` for the commands and the latest numbers.
"""
