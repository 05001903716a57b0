"""Fan the cases of one evaluation out to a Dask cluster, or to local processes.

``map_cases(fn, items, address=settings.dask_address)``: with an address (e.g.
``tcp://10.0.0.5:8786``, MEDARENA_DASK_ADDRESS) the calls run on that distributed
cluster's workers; without one, on a local process pool. ``fn`` must be a top-level
(picklable) function and every item picklable; results come back in input order.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from medarena.errors import ConfigError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

ProgressFn = Callable[[int, int], None]


def map_cases(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    address: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    connect_timeout: float = 30.0,
) -> list[R]:
    """``[fn(item) for item in items]`` computed in parallel; results in input order.

    ``address``: a Dask scheduler to run on; None uses a local process pool of
    ``workers`` processes (default: the CPU count; 1 runs in this process).
    ``progress(done, total)`` is called as results arrive. The first exception raised by
    ``fn`` propagates (the remaining calls are cancelled).
    """
    items = list(items)
    total = len(items)
    if total == 0:
        return []
    if address:
        return _map_dask(fn, items, address, progress, connect_timeout)
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"workers must be at least 1, got {n}")
    if n == 1 or total == 1:
        out: list[R] = []
        for i, item in enumerate(items, 1):
            out.append(fn(item))
            if progress:
                progress(i, total)
        return out
    results: list[Any] = [None] * total
    # forkserver: the calling process runs heartbeat and database threads, which a
    # plain fork would copy in an arbitrary state.
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=min(n, total), mp_context=ctx) as pool:
        futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
        try:
            for done, fut in enumerate(as_completed(futures), 1):
                results[futures[fut]] = fut.result()
                if progress:
                    progress(done, total)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return results


def _map_dask(
    fn: Callable[[T], R],
    items: list[T],
    address: str,
    progress: ProgressFn | None,
    connect_timeout: float,
) -> list[R]:
    # imported here: dask is heavy and only needed when a cluster is configured
    from distributed import Client
    from distributed import as_completed as dask_as_completed

    try:
        client = Client(address, timeout=connect_timeout, set_as_default=False)
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at MEDARENA_DASK_ADDRESS={address!r}: {exc}"
        ) from exc
    total = len(items)
    try:
        # pure=False: identical items (rare, but possible) are still computed per case.
        futures = client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * total
        try:
            # with_results: fetched through this client (it is not the default client)
            arrivals = dask_as_completed(futures, loop=client.loop, with_results=True)
            for done, (fut, value) in enumerate(arrivals, 1):
                results[index[fut.key]] = value
                if progress:
                    progress(done, total)
        except BaseException:
            client.cancel(futures)
            raise
        logger.info("%d cases computed on the Dask cluster", total)
        return results
    finally:
        client.close()
