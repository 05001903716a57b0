"""map_cases on a Dask LocalCluster bound to 127.0.0.1, on a local pool and in process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobtest_handlers import fail_on_three, square_with_pid

from medarena.errors import ConfigError
from medarena.jobs.fanout import map_cases

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A two-process Dask cluster listening on 127.0.0.1 only."""
    from distributed import LocalCluster

    # the worker processes import the test functions by module name
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), old) if p)
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
        ) as cluster:
            yield cluster.scheduler_address
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def test_map_cases_runs_on_the_dask_cluster(dask_address: str) -> None:
    assert dask_address.startswith("tcp://127.0.0.1:")
    seen: list[tuple[int, int]] = []
    out = map_cases(
        square_with_pid,
        [3, 1, 4, 1, 5],
        address=dask_address,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert [v for v, _ in out] == [9, 1, 16, 1, 25]  # input order, repeated items computed too
    assert os.getpid() not in {pid for _, pid in out}  # computed in the cluster's workers
    assert seen[-1] == (5, 5) and len(seen) == 5


def test_map_cases_on_dask_propagates_the_case_error(dask_address: str) -> None:
    with pytest.raises(ValueError, match="case 3 cannot be scored"):
        map_cases(fail_on_three, [1, 2, 3, 4], address=dask_address)


def test_unreachable_scheduler_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        map_cases(square_with_pid, [1], address="tcp://127.0.0.1:9", connect_timeout=1)


def test_map_cases_on_a_local_process_pool() -> None:
    out = map_cases(square_with_pid, list(range(6)), workers=2)
    assert [v for v, _ in out] == [0, 1, 4, 9, 16, 25]
    assert os.getpid() not in {pid for _, pid in out}
    with pytest.raises(ValueError, match="case 3"):
        map_cases(fail_on_three, [1, 2, 3, 4], workers=2)


def test_map_cases_in_process_with_one_worker() -> None:
    seen: list[tuple[int, int]] = []
    out = map_cases(square_with_pid, [2, 3], workers=1, progress=lambda d, t: seen.append((d, t)))
    assert out == [(4, os.getpid()), (9, os.getpid())]
    assert seen == [(1, 2), (2, 2)]
    assert map_cases(square_with_pid, [], workers=4) == []
