"""Optional parallel execution of the independent work inside one solve (issue 14).

``ot_bounds``, ``solve_ot``, ``otdd(..., solver="minibatch")``, :func:`minibatch_bounds`,
the anytime loop and :func:`otaudit.core.costs.c_transform` take ``executor=``: any
:class:`concurrent.futures.Executor` (a thread or process pool, Dask's
``client.get_executor()``, or anything with ``submit(fn, *args) -> Future``). ``None`` runs
everything in process. The executor is installed for the duration of the call
(:func:`using`, a context variable) and the stages that have independent work read it
(:func:`current`):

- the exact LP block solves of one stage (:func:`otaudit.core.minibatch.blocks.solve_blocks`:
  the base coupling, each column-generation round, each refinement pass);
- the row tiles of the c-transforms and of the block residual minima (the lower bound's
  ``n x m`` passes);
- the assignment step of k-means (:func:`otaudit.core.partition.kmeans`);
- the column chunks of sliced screening's projections (:func:`otaudit.core.sliced.sliced_otdd`).

**Same numbers to the bit.** Every unit of work computes exactly what the serial loop
computes for the same rows (same shapes, same operations); the results are gathered in
submission order and reduced in the serial order (or by ``min``, which is exact in any
order). So ``executor`` never changes a result; it is not part of ``params``.

**Coarse units, data by reference.** The items of a stage are cut into at most
``workers * config.EXECUTOR_CHUNKS_PER_WORKER`` contiguous chunks, one submitted task each.
Large read-only inputs (the cost object with both point clouds, the k-means points) go
through :meth:`Pool.share`: Dask's ``ClientExecutor`` scatters them once to every worker
(``client.scatter(..., broadcast=True)``; the tasks receive the worker's copy), an
executor offering its own ``share(obj) -> handle`` uses that, a thread pool copies nothing,
and any other executor (a process pool) pickles them with each task. Block solves send
the shared cost once and only the blocks' indices and weights per task where the executor
shares by reference (:attr:`Pool.by_reference`); to a process pool they send only the
blocks' own points (:meth:`sub` of the cost).

A task running on a pool's worker sees no executor (context variables do not cross into
the pool's threads or processes), so nested work runs in place and never waits on the pool
it occupies.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .. import config

__all__ = ["Pool", "current", "using", "workers_of", "chunked"]


class Pool:
    """An executor for the duration of one call: its worker count, the shared inputs
    (handles by object identity, the objects kept alive meanwhile) and counters (``tasks``
    submitted, ``items`` of work)."""

    def __init__(self, executor: Any):
        if not callable(getattr(executor, "submit", None)):
            from ..errors import InputError

            raise InputError(
                f"executor must be a concurrent.futures.Executor, got {type(executor).__name__}",
                field="executor",
                fix="pass e.g. ThreadPoolExecutor(2), client.get_executor() or None",
            )
        self.executor = executor
        self.n_workers = workers_of(executor)
        self._shared: dict[int, tuple[Any, Any]] = {}
        self.tasks = 0
        self.items = 0

    def _put(self) -> Callable[[Any], Any] | None:
        """How this executor sends an object once: its own ``share``, Dask's scatter to
        every worker, else None."""
        put = getattr(self.executor, "share", None)
        client = getattr(self.executor, "_client", None)  # Dask's ClientExecutor
        if put is None and callable(getattr(client, "scatter", None)):

            def put(o: Any) -> Any:  # once to every worker; tasks receive the data
                return client.scatter(o, broadcast=True, hash=False)

        return put

    @property
    def by_reference(self) -> bool:
        """True when a :meth:`share`d object reaches the tasks without being copied into
        each one (sent once by the executor, or a thread pool: same process); False for a
        process pool, which pickles it with every task."""
        return self._put() is not None or isinstance(self.executor, ThreadPoolExecutor)

    def share(self, obj: Any) -> Any:
        """A handle standing for ``obj`` in submitted tasks: the executor's own ``share``
        (sent once) when it has one, else ``obj`` itself (sent with each task)."""
        put = self._put()
        if put is None:
            return obj
        key = id(obj)
        if key not in self._shared:
            self._shared[key] = (obj, put(obj))
        return self._shared[key][1]

    def map(self, fn: Callable[..., list], chunks: Sequence[Sequence[Any]], *args: Any) -> list:
        """``fn(*args, chunk)`` for every chunk, submitted at once, results concatenated in
        submission order (``fn`` returns one list per chunk)."""
        futures = [self.executor.submit(fn, *args, list(c)) for c in chunks]
        self.tasks += len(futures)
        self.items += sum(len(c) for c in chunks)
        out: list = []
        for fu in futures:
            out.extend(fu.result())
        return out

    def n_chunks(self, n_items: int, per_worker: int | None = None) -> int:
        per = config.EXECUTOR_CHUNKS_PER_WORKER if per_worker is None else per_worker
        return max(1, min(n_items, self.n_workers * per))


_CURRENT: contextvars.ContextVar[Pool | None] = contextvars.ContextVar(
    "otaudit_executor", default=None
)


def workers_of(executor: Any) -> int:
    """How many tasks ``executor`` runs at once: ``n_workers`` if it says, a pool's
    ``_max_workers``, a Dask client's total threads; else the CPU count."""
    for name in ("n_workers", "_max_workers"):
        v = getattr(executor, name, None)
        if isinstance(v, int) and v > 0:
            return v
    client = getattr(executor, "_client", None)  # distributed.cfexecutor.ClientExecutor
    if client is not None:
        with contextlib.suppress(Exception):
            return max(1, sum(client.nthreads().values()))
    return os.cpu_count() or 1


def current() -> Pool | None:
    """The pool installed by the innermost :func:`using` with an executor, or None."""
    return _CURRENT.get()


@contextlib.contextmanager
def using(executor: Any) -> Iterator[Pool | None]:
    """Install ``executor`` for the enclosed calls; None keeps whatever is installed (so
    nested entry points share one pool and its shared inputs)."""
    outer = _CURRENT.get()
    if executor is None or (outer is not None and outer.executor is executor):
        yield outer
        return
    pool = executor if isinstance(executor, Pool) else Pool(executor)
    token = _CURRENT.set(pool)
    try:
        yield pool
    finally:
        _CURRENT.reset(token)


def chunked(items: Sequence[Any], k: int) -> list[Sequence[Any]]:
    """``items`` cut into ``k`` contiguous chunks of near-equal length (order kept)."""
    n = len(items)
    k = max(1, min(k, n))
    size = math.ceil(n / k)
    return [items[i : i + size] for i in range(0, n, size)]
