"""Scale out on existing engines: data-parallel training over ``torch.distributed``.

See ``bnn.parallel.distributed`` and ``docs/distributed.md``.
"""

from bnn.parallel.distributed import (
    DataParallel,
    DistributedContext,
    SingleProcess,
    TrainingStrategy,
    process_group_context,
    training_strategy,
)

__all__ = [
    "DataParallel",
    "DistributedContext",
    "SingleProcess",
    "TrainingStrategy",
    "process_group_context",
    "training_strategy",
]
