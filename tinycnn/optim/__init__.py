"""tinycnn.optim: optimizers (SGD, Adam, AdamW, Adagrad, RMSprop), tinycnn.optim.lr_scheduler and tinycnn.optim.swa_utils (weight averaging)."""
from . import lr_scheduler, swa_utils  # noqa: F401
from .adagrad import Adagrad  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .sgd import SGD  # noqa: F401
