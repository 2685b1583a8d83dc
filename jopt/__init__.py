"""jopt: optimizers for JAX as pure gradient transformations.

The flat public API: ``jopt.<name>`` for the optax door and building blocks,
``jopt.torch.<Name>`` for the torch door.
"""

from jopt import torch as torch
from jopt import tree as tree
from jopt.base import EmptyState as EmptyState
from jopt.base import GradientTransformation as GradientTransformation
from jopt.base import OptState as OptState
from jopt.base import Params as Params
from jopt.base import ScalarOrSchedule as ScalarOrSchedule
from jopt.base import Schedule as Schedule
from jopt.base import Updates as Updates
from jopt.base import apply_updates as apply_updates
from jopt.base import identity as identity
from jopt.combine import chain as chain
from jopt.fused import FusedState as FusedState
from jopt.fused import fuse as fuse
from jopt.hyperparams import HyperparamsState as HyperparamsState
from jopt.hyperparams import hyperparams as hyperparams
from jopt.hyperparams import set_hyperparams as set_hyperparams
from jopt.hyperparams import with_hyperparams as with_hyperparams
from jopt.optimizers import adadelta as adadelta
from jopt.optimizers import adagrad as adagrad
from jopt.optimizers import adam as adam
from jopt.optimizers import adamw as adamw
from jopt.optimizers import rmsprop as rmsprop
from jopt.optimizers import sgd as sgd
from jopt.transforms.adaptive import ScaleByAdaDeltaState as ScaleByAdaDeltaState
from jopt.transforms.adaptive import ScaleByAdamState as ScaleByAdamState
from jopt.transforms.adaptive import ScaleByAmsgradState as ScaleByAmsgradState
from jopt.transforms.adaptive import ScaleByRmsState as ScaleByRmsState
from jopt.transforms.adaptive import ScaleByRssState as ScaleByRssState
from jopt.transforms.adaptive import ScaleByStddevState as ScaleByStddevState
from jopt.transforms.adaptive import scale_by_adadelta as scale_by_adadelta
from jopt.transforms.adaptive import scale_by_adam as scale_by_adam
from jopt.transforms.adaptive import scale_by_amsgrad as scale_by_amsgrad
from jopt.transforms.adaptive import scale_by_rms as scale_by_rms
from jopt.transforms.adaptive import scale_by_rss as scale_by_rss
from jopt.transforms.adaptive import scale_by_stddev as scale_by_stddev
from jopt.transforms.momentum import TraceState as TraceState
from jopt.transforms.momentum import trace as trace
from jopt.transforms.scaling import ScaleByScheduleState as ScaleByScheduleState
from jopt.transforms.scaling import maximize as maximize
from jopt.transforms.scaling import scale as scale
from jopt.transforms.scaling import scale_by_learning_rate as scale_by_learning_rate
from jopt.transforms.scaling import scale_by_schedule as scale_by_schedule
from jopt.transforms.weight_decay import add_decayed_weights as add_decayed_weights
from jopt.tree import TreeMismatchError as TreeMismatchError
from jopt.tree import global_norm as global_norm

__version__ = "0.1.0"
