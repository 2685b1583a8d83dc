"""Building blocks, one module per family; every name is also exported as ``jopt.<name>``."""

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
