"""MNIST example: data loading, a flax model, and the functional training cycle.

``train(Config(...)) -> History`` is the Python API that the ``jopt-mnist`` command line
(`jopt.examples.mnist.cli`) and the notebooks share.
"""

from jopt.examples.mnist.config import Config as Config
from jopt.examples.mnist.config import ConfigError as ConfigError
from jopt.examples.mnist.train import EpochRecord as EpochRecord
from jopt.examples.mnist.train import History as History
from jopt.examples.mnist.train import ResumeError as ResumeError
from jopt.examples.mnist.train import restore as restore
from jopt.examples.mnist.train import train as train

__all__ = ["Config", "ConfigError", "EpochRecord", "History", "ResumeError", "restore", "train"]
