"""``local_pool``'s workers never outlive the work: killed, interrupted or orphaned, they stop."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

# a pool of one worker that reports its pid, then runs a job longer than any test
_HOLDS_A_LONG_JOB = """
import os, sys, time
from bnn.parallel.executors import local_pool
with local_pool(1) as pool:
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 300)
    time.sleep(300)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:  # gone since
        return False


def _start() -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _HOLDS_A_LONG_JOB], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    ready, _, _ = select.select([parent.stdout], [], [], 120)
    assert ready, "the pool's first job did not report within 120 s"
    worker = int(parent.stdout.readline())
    assert _alive(worker) and worker != parent.pid
    time.sleep(0.5)  # the long job is running in the worker
    return parent, worker


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("how", "exit_code"),
    [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT), (signal.SIGKILL, -signal.SIGKILL)],
    ids=["sigterm", "ctrl-c", "kill-9"],
)
def test_a_worker_running_a_job_stops_with_its_parent(how: signal.Signals, exit_code: int) -> None:
    parent, worker = _start()
    try:
        parent.send_signal(how)
        assert parent.wait(timeout=20) == exit_code
        assert _gone_within(worker, 10), f"worker {worker} outlived its parent ({how.name})"
    finally:
        parent.kill()
        parent.wait()
        assert parent.stdout is not None
        parent.stdout.close()
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def test_a_pid_that_runs_is_alive_and_a_finished_or_unreaped_one_is_not() -> None:
    assert _alive(os.getpid())
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, finished.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not _alive(finished.pid)
    finished.wait()
    assert not _alive(finished.pid)
