"""Scale out on existing engines: data-parallel training over ``torch.distributed``, and
independent jobs (seeds, members, trials, splits) on any ``concurrent.futures.Executor``.

See ``bnn.parallel.distributed``, ``bnn.parallel.executors`` and ``docs/distributed.md``.
"""

from bnn.parallel.distributed import (
    DataParallel,
    DistributedContext,
    SingleProcess,
    TrainingStrategy,
    process_group_context,
    training_strategy,
)
from bnn.parallel.executors import JobError, run_jobs

__all__ = [
    "DataParallel",
    "DistributedContext",
    "JobError",
    "SingleProcess",
    "TrainingStrategy",
    "process_group_context",
    "run_jobs",
    "training_strategy",
]
