"""Sweeps on any ``concurrent.futures.Executor``: the serial bits; failures named, none dropped."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor

import pytest
import torch

import bnn
from bnn.parallel.executors import JobError
from tests.parallel import jobs


def _pool(workers: int = 2) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def test_a_sweep_on_a_process_pool_equals_the_serial_sweep_bit_for_bit() -> None:
    serial = bnn.seed_sweep(jobs.train_briefly, 6, rng=7, threads_per_job=1, progress=False)
    with _pool() as pool:
        pooled = bnn.seed_sweep(jobs.train_briefly, 6, rng=7, executor=pool)
    assert pooled.runs == serial.runs and pooled.table == serial.table
    assert len({run["loss"] for run in serial.runs}) == 6  # the seeds do differ
    assert all(run["threads"] == 1.0 for run in pooled.runs)  # one torch thread per job


def test_a_sweep_on_a_dask_cluster_equals_the_serial_sweep_bit_for_bit() -> None:
    distributed = pytest.importorskip("distributed")
    serial = bnn.seed_sweep(jobs.train_briefly, 4, rng=7, threads_per_job=1, progress=False)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_cluster = bnn.seed_sweep(jobs.train_briefly, 4, rng=7, executor=client.get_executor())
    assert on_cluster.runs == serial.runs


def test_a_failing_seed_is_named_and_the_others_still_run() -> None:
    with pytest.raises(JobError, match=r"1 of 5 jobs failed \(seed 3\).*this seed's run broke"):
        bnn.seed_sweep(jobs.fail_on_seed_three, 5, rng=0, progress=False)
    with _pool() as pool, pytest.raises(JobError, match=r"\(seed 3\)") as caught:
        bnn.seed_sweep(jobs.fail_on_seed_three, 5, rng=0, executor=pool)
    assert list(caught.value.failures) == [3]


def test_a_lost_worker_is_reported_never_silently_dropped() -> None:
    with _pool() as pool, pytest.raises(JobError, match=r"seed 1") as caught:
        bnn.seed_sweep(jobs.die_on_seed_one, 4, rng=0, executor=pool)
    failures = caught.value.failures
    assert 1 in failures  # and every job the broken pool could not finish is listed too
    assert all(isinstance(error, BrokenExecutor) for error in failures.values())
    assert "terminated abruptly" in str(caught.value)


def test_bad_executor_and_thread_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="concurrent.futures.Executor"):
        bnn.seed_sweep(jobs.train_briefly, 2, executor="pool", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads_per_job must be a positive int"):
        bnn.seed_sweep(jobs.train_briefly, 2, threads_per_job=0, progress=False)


def test_ensemble_members_on_an_executor_equal_sequential_training() -> None:
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    y = x.sum(-1, keepdim=True)
    options = {"likelihood": bnn.Gaussian(0.1), "num_members": 3, "epochs": 3, "rng": 1}
    serial, _ = bnn.infer.deep_ensemble(
        jobs.small_member, (x, y), threads_per_member=1, progress=False, **options
    )
    with _pool() as pool:
        pooled, _ = bnn.infer.deep_ensemble(
            jobs.small_member, (x, y), executor=pool, progress=False, **options
        )
    for a, b in zip(serial.members, pooled.members, strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    with pytest.raises(ValueError, match="workers= .* or executor=, not both"):
        bnn.infer.deep_ensemble(jobs.small_member, (x, y), workers=2, executor=pool, **options)
