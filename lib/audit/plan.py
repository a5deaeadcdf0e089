"""What one audit run is: the validated manifest, the output store, the pairs and their
blocks (:class:`AuditPlan`, small and picklable: no arrays, passed to every task)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..version import __version__

__all__ = ["AuditPlan", "plan_blocks", "code_version", "load_plan"]


def code_version() -> str:
    """The version of the code that produced a result (the ``code_version`` report column).

    The cache does not rely on it (the version is bumped rarely): cache keys carry a
    fingerprint of the code and config that determine each object (:mod:`otaudit.data.cache`).
    """
    return f"otaudit-{__version__}"


@dataclass(frozen=True)
class AuditPlan:
    """Everything the tasks need to know about one audit run (small: no arrays).

    ``manifest`` is the validated :class:`otaudit.data.manifest.Manifest` (its storage options
    may hold credentials: it is passed to tasks, never logged or written out; reports use
    :meth:`Manifest.redacted`).
    """

    manifest: Any
    output: str
    run_id: str
    pairs: list[tuple[str, str]]
    blocks: list[list[tuple[str, str]]]
    code_version: str
    use_cache: bool = True
    started_at: float = 0.0
    measures: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Dataset names in manifest order."""
        return [d.name for d in self.manifest.datasets]

    @property
    def storage_options(self) -> dict[str, Any]:
        """Storage options of the output store (the manifest's, scoped to its backend)."""
        return self.manifest.storage_options_for(self.output)

    def store(self) -> Any:
        """The output store (``<output>``)."""
        from ..data.storage import Store

        return Store(self.output, self.storage_options or None)

    def cache(self) -> Any:
        """The content-addressed cache of this audit's output store (``<output>/_cache``)."""
        from ..data.cache import Cache

        return Cache(self.store())


def plan_blocks(pairs: list[tuple[str, str]], n_threads: int) -> list[list[tuple[str, str]]]:
    """Cut the ordered pairs into contiguous blocks (coarse Prefect tasks).

    ``config.PAIR_BLOCKS_PER_THREAD`` blocks per Dask thread, at most
    ``config.PAIR_BLOCK_MAX`` pairs per block; contiguous chunks of the manifest-ordered
    pairs share their first dataset, so each block loads few dataset statistics.
    """
    if not pairs:
        return []
    n_blocks = max(1, n_threads) * config.PAIR_BLOCKS_PER_THREAD
    n_blocks = max(n_blocks, math.ceil(len(pairs) / config.PAIR_BLOCK_MAX))
    n_blocks = min(n_blocks, len(pairs))
    size = math.ceil(len(pairs) / n_blocks)
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def load_plan(
    manifest: str, output: str | None, run_id: str, n_threads: int, use_cache: bool = True
) -> AuditPlan:
    """Load and validate the manifest, check that the output store answers, plan the pairs.

    Raises:
        InputError: a bad manifest (one line naming dataset, field and fix).
        StorageError: the output store is unreachable.
    """
    import time

    from ..data.manifest import load_manifest, select_pairs
    from ..data.storage import Store, check_reachable

    m = load_manifest(manifest)
    if output:
        m = m.model_copy(update={"output": output})
    check_reachable(Store(m.output, m.storage_options_for(m.output) or None))
    pairs = select_pairs(m)
    return AuditPlan(
        manifest=m,
        output=m.output,
        run_id=run_id,
        pairs=pairs,
        blocks=plan_blocks(pairs, n_threads),
        code_version=code_version(),
        use_cache=use_cache,
        started_at=time.time(),
        measures=list(m.measures.selected),
    )
