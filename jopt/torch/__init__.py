"""The torch door: torch.optim's optimizers and schedulers as jopt transformations.

``jopt.torch.Adam(lr=1e-3, betas=(0.9, 0.999))`` takes torch's arguments and defaults
and returns a :class:`~jopt.GradientTransformation` whose trajectory is torch's.
"""

from jopt.torch import amp as amp
from jopt.torch import lr_scheduler as lr_scheduler
from jopt.torch import swa_utils as swa_utils
from jopt.torch.clip import ClipGradNormState as ClipGradNormState
from jopt.torch.clip import clip_grad_norm as clip_grad_norm
from jopt.torch.clip import clip_grad_value as clip_grad_value
from jopt.torch.optim import SGD as SGD
from jopt.torch.optim import Adadelta as Adadelta
from jopt.torch.optim import Adagrad as Adagrad
from jopt.torch.optim import Adam as Adam
from jopt.torch.optim import AdamW as AdamW
from jopt.torch.optim import RMSprop as RMSprop
