"""The paged KV cache's block ledger, shared by both node engines (vLLM's ``KVCacheManager`` in counts, plus its
automatic prefix cache by block hash).

Model: a node's cache holds ``capacity`` blocks of ``block_size`` tokens; a request holds ``cdiv(tokens,
block_size)`` blocks for the tokens it has computed (or for its final context, prompt + output − 1, when KV is
reserved up front). Without prefix caching the ledger keeps only the count of blocks held: which request holds
which block does not change step times or admissions.

**Prefix cache** (``unit_blocks > 0``; vLLM's automatic prefix caching at a coarser grain). A request may carry
``prefix``: chained hashes of its token stream in *units* of ``unit_blocks`` blocks (unit ``i``'s hash depends on
every token before it, so equal hashes mean equal prefixes). Cached units are shared: each has a reference count
and its blocks are counted once however many requests use it. At admission a request takes the longest run of its
leading units that are cached (at most ``(prompt − 1) // unit`` units: the last prompt token is always computed,
as in vLLM), skips their prefill and references them; a unit nobody references is *cached free*: still
hit-able, and evicted least-recently-released first when blocks are needed (releases are ordered by engine step,
then deepest unit first — vLLM frees a request's blocks tail first —, then hash: an order that does not depend on
which request released last within a step, so both engines evict the same units). As computation passes a unit
boundary (the end of each prefill chunk; at finish for output tokens) the request's full units enter the cache
(:meth:`BlockLedger.promote`): its private blocks become shared, or, if an equal unit is already cached, the request
references that one and its own copy is freed.

Accounting: ``private + shared in use + cached free + unused = capacity``; ``held`` = private + shared in use (the
"KV used" of the reports); ``free_blocks`` = capacity − held (cached-free blocks count as free: allocating evicts
them). Granularity: a unit is a whole number of blocks (256 or 512 tokens, set by the traffic's hashes), so a hit
is rounded down to whole units where vLLM rounds to whole blocks.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

from sortedcontainers import SortedList

if TYPE_CHECKING:
    from sim.core.config import Engine
    from sim.traffic.request import Request


def make_ledger(engine: Engine, capacity_blocks: int) -> BlockLedger:
    """A node's ledger: with ``engine.prefix_caching``, units of ``prefix_unit_tokens`` tokens."""
    bs = engine.block_size
    return BlockLedger(capacity_blocks, engine.prefix_unit_tokens // bs if engine.prefix_caching else 0, bs)


def match_in(units: AbstractSet[int], req: Request, unit_tokens: int) -> int:
    """Prompt tokens of ``req`` whose units are in ``units`` (a copy of a cache), as :meth:`BlockLedger.lookup`."""
    chain = req.prefix
    if not chain or not unit_tokens:
        return 0
    n = 0
    for h in chain[: (req.prompt_tokens - 1) // unit_tokens]:
        if h not in units:
            break
        n += 1
    return n * unit_tokens


def cdiv(a: int, b: int) -> int:
    """Ceiling division for non-negative ``a`` and positive ``b`` (vLLM's ``cdiv``): blocks for ``a`` tokens."""
    return -(-a // b)


LruKey = tuple[int, int, int]  # (engine step of the last release, −unit index, unit hash)


class BlockLedger:
    """KV blocks on one node: held by requests (never negative, never above ``capacity``) and, with
    ``unit_blocks > 0``, a shared prefix cache of units of ``unit_blocks`` blocks each."""

    __slots__ = ("capacity", "held", "unit_blocks", "unit_tokens", "cached_free", "_ref", "_key", "_lru", "_by_key",
                 "evicted_units")

    def __init__(self, capacity: int, unit_blocks: int = 0, block_size: int = 1) -> None:
        if capacity < 0:
            raise ValueError(f"KV capacity must be >= 0 blocks, got {capacity}")
        self.capacity = capacity
        self.held = 0
        self.unit_blocks = unit_blocks
        self.unit_tokens = unit_blocks * block_size
        self.cached_free = 0  # blocks of cached units nobody references (evictable)
        self._ref: dict[int, int] = {}  # unit hash -> reference count (every cached unit)
        self._key: dict[int, LruKey] = {}  # unit hash -> its LRU key, for units with no reference
        self._lru: SortedList = SortedList()  # LRU keys of unreferenced units, oldest first
        self._by_key: dict[LruKey, int] = {}  # LRU key -> unit hash
        self.evicted_units = 0

    # -- counts ------------------------------------------------------------------------------------------
    @property
    def caching(self) -> bool:
        return self.unit_blocks > 0

    @property
    def free_blocks(self) -> int:
        """Blocks a request may still take: unused ones and cached-free ones (evicted on demand)."""
        return self.capacity - self.held

    @property
    def unused_blocks(self) -> int:
        """Blocks holding nothing (allocating more than these evicts cached-free units)."""
        return self.capacity - self.held - self.cached_free

    @property
    def cached_units(self) -> int:
        return len(self._ref)

    def can_allocate(self, n: int) -> bool:
        """Whether ``n`` more blocks fit."""
        return n <= self.capacity - self.held

    def allocate(self, n: int) -> None:
        """Take ``n`` blocks, evicting least-recently-released cached units as needed; the caller checked
        :meth:`can_allocate` (an overdraft is an engine bug)."""
        if n < 0 or n > self.capacity - self.held:
            raise RuntimeError(f"KV ledger: cannot allocate {n} blocks, {self.capacity - self.held} free")
        while n > self.capacity - self.held - self.cached_free:
            self._evict_one()
        self.held += n

    def free(self, n: int) -> None:
        """Return ``n`` private blocks."""
        if n < 0 or n > self.held:
            raise RuntimeError(f"KV ledger: cannot free {n} blocks, {self.held} held")
        self.held -= n

    def clear(self) -> None:
        """Every block returned and the cache emptied at once (the node died)."""
        self.held = 0
        self.cached_free = 0
        self._ref.clear()
        self._key.clear()
        self._lru.clear()
        self._by_key.clear()

    # -- prefix cache ----------------------------------------------------------------------------------
    def _evict_one(self) -> None:
        key = self._lru.pop(0)
        h = self._by_key.pop(key)
        del self._key[h], self._ref[h]
        self.cached_free -= self.unit_blocks
        self.evicted_units += 1

    def _unfree(self, h: int) -> None:
        """An unreferenced cached unit is referenced again: it leaves the LRU."""
        key = self._key.pop(h)
        self._lru.remove(key)
        del self._by_key[key]
        self.cached_free -= self.unit_blocks

    def _hit_units(self, req: Request, limit_units: int, pending_blocks: int = 0) -> tuple[int, int]:
        """(leading units of ``req.prefix`` cached, of which unreferenced), at most ``limit_units``.
        ``pending_blocks``: blocks already allocated by decode steps not yet booked (a fast node inside a decode
        run); the cached-free units they would have evicted by now do not count."""
        chain = req.prefix
        if not self.unit_blocks or not chain:
            return 0, 0
        ref = self._ref
        evict = 0
        over = pending_blocks - self.unused_blocks
        if over > 0:
            evict = cdiv(over, self.unit_blocks)
        hits = revive = 0
        for h in chain[:limit_units]:
            r = ref.get(h)
            if r is None:
                break
            if r == 0:
                if evict and self._lru.bisect_left(self._key[h]) < evict:
                    break
                revive += 1
            hits += 1
        return hits, revive

    def lookup(self, req: Request) -> tuple[int, int, int]:
        """Prefix-cache hit of ``req`` if admitted now: (cached tokens, blocks it would share, blocks of those
        it would take back from the cached-free pool). Without a hash chain (or caching off): the request's
        own ``cached_tokens`` (the configured-rate approximation), nothing shared."""
        if not self.unit_blocks or not req.prefix:
            return req.cached_tokens, 0, 0
        hits, revive = self._hit_units(req, (req.prompt_tokens - 1) // self.unit_tokens)
        return hits * self.unit_tokens, hits * self.unit_blocks, revive * self.unit_blocks

    def match_tokens(self, req: Request, pending_blocks: int = 0) -> int:
        """Prompt tokens of ``req`` this node's cache holds now (what a prefix-aware router scores)."""
        if not self.unit_blocks or not req.prefix:
            return 0
        return self._hit_units(req, (req.prompt_tokens - 1) // self.unit_tokens, pending_blocks)[0] * self.unit_tokens

    def unit_set(self, pending_blocks: int = 0) -> frozenset[int]:
        """The cached units now (a stale router's copy); ``pending_blocks`` as in :meth:`match_tokens`."""
        units = frozenset(self._ref)
        over = pending_blocks - self.unused_blocks
        if over > 0 and self.unit_blocks:
            gone = [self._by_key[k] for k in self._lru[: cdiv(over, self.unit_blocks)]]
            units = units.difference(gone)
        return units

    def admit(self, req: Request, need: int, hit: tuple[int, int, int]) -> None:
        """Book an admission: ``need`` blocks in all (the request's new private blocks plus the cached-free blocks
        it takes back), ``hit`` as returned by :meth:`lookup` just before. Sets ``req.cached_tokens`` (with a hash
        chain) and the units it references."""
        cached, shared, revive = hit
        if shared:
            units = shared // self.unit_blocks
            ref = self._ref
            for h in req.prefix[:units]:  # type: ignore[index]
                if ref[h] == 0:
                    self._unfree(h)
                ref[h] += 1
            self.held += revive
            self.allocate(need - revive)
        else:
            self.allocate(need)
        req.shared_units = shared // self.unit_blocks if self.unit_blocks else 0
        if self.unit_blocks and req.prefix:
            req.cached_tokens = cached

    def promote(self, req: Request, tokens: int) -> None:
        """``req`` has computed its first ``tokens`` tokens: its full units up to there enter the cache (its own
        blocks become shared), or it references an equal unit already cached (its own copy is freed)."""
        chain = req.prefix
        if not self.unit_blocks or not chain:
            return
        upto = min(len(chain), tokens // self.unit_tokens)
        k = req.shared_units
        if upto <= k:
            return
        ref = self._ref
        ub = self.unit_blocks
        for h in chain[k:upto]:
            r = ref.get(h)
            if r is None:
                ref[h] = 1  # the request's private blocks become the cached unit: held unchanged
            else:
                if r == 0:  # take the cached copy back, free the request's own copy: held unchanged
                    self._unfree(h)
                    ref[h] = 1
                else:  # shared with a running request: the request's own copy is freed
                    ref[h] = r + 1
                    self.held -= ub
        req.shared_units = upto

    def release(self, req: Request, blocks: int, step: int) -> None:
        """``req`` gives back its ``blocks`` blocks (finished, preempted, withdrawn) at engine step ``step``: its
        private ones become unused, its cached units lose a reference (unreferenced ones turn cached-free, ordered
        for eviction by (step, deepest unit first, hash))."""
        k = req.shared_units
        if not k:
            self.free(blocks)
            return
        ub = self.unit_blocks
        self.free(blocks - k * ub)
        ref = self._ref
        chain = req.prefix
        assert chain is not None
        for i in range(k - 1, -1, -1):
            h = chain[i]
            r = ref[h] - 1
            ref[h] = r
            if r == 0:  # the last user: its blocks move from in use to cached free
                self.held -= ub
                key = (step, -i, h)
                self._key[h] = key
                self._by_key[key] = h
                self._lru.add(key)
                self.cached_free += ub
        req.shared_units = 0

    def check(self) -> None:
        """Invariants (tests): counts within bounds, cached-free = unreferenced units × unit size."""
        unref = sum(1 for r in self._ref.values() if r == 0)
        assert all(r >= 0 for r in self._ref.values())
        assert unref == len(self._lru) == len(self._key) == len(self._by_key)
        assert self.cached_free == unref * self.unit_blocks
        assert self.held >= 0 and self.held + self.cached_free <= self.capacity
