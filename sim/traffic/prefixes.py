"""Shared prompt prefixes of synthetic traffic, as prefix-cache hash chains (classes with a ``prefix`` section).

Model: a prompt is a sequence of *segments* — the class's system prompt, RAG documents, the conversation so far
(earlier messages and answers), the new message — each with a content key. The token stream is cut into units of
``unit_tokens`` tokens and unit ``i`` gets the chained hash ``hash((hash of unit i−1, pieces of unit i))``, where a
piece is (segment key, first, last token offset): two prompts share unit ``i`` exactly when their first
``(i + 1)·unit`` tokens are the same text, as with vLLM's block hashes. Only whole units are hashed.

* System prompts: ``count`` texts, lengths drawn once, one per request by Zipf popularity (tenants).
* Documents: ``count`` texts, ``per_request`` of them per request (per conversation in a conversational class), each
  by Zipf popularity, placed after the system prompt in the order drawn.
* Conversations: open loop (no closed feedback from the answer time). Each class keeps the conversations waiting
  for their next turn in a heap by the time they become ready (previous turn's arrival + an exponential think
  time); an arrival continues the one ready longest, else starts a new one. A turn's chain also covers its answer
  (the next turn's prompt starts with it: cached answer blocks hit as in vLLM). A conversation ready for more than
  ``10 × think_time_s + 60`` s without an arrival to continue it is dropped (its user left).

Randomness: one seeded generator (the scenario's ``prefixes`` stream), consumed in arrival order; hashes are of
tuples of ints, which Python hashes the same in every process.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.core.config import RequestClass, SharedTexts
from sim.traffic.classes import TokenSampler

_SYSTEM, _DOC, _MESSAGE, _ANSWER = 1, 2, 3, 4
Segment = tuple[int, int]  # (content key, tokens)


def unit_chain(segments: list[Segment], unit_tokens: int) -> tuple[int, ...]:
    """Chained hashes of the whole ``unit_tokens``-token units of the concatenated segments."""
    chain: list[int] = []
    prev = 0
    pieces: list[tuple[int, int, int]] = []
    fill = 0
    for key, length in segments:
        off = 0
        while off < length:
            take = min(unit_tokens - fill, length - off)
            pieces.append((key, off, off + take))
            off += take
            fill += take
            if fill == unit_tokens:
                prev = hash((prev, tuple(pieces)))
                chain.append(prev)
                pieces = []
                fill = 0
    return tuple(chain)


def regroup_chain(chain: tuple[int, ...] | list[int], block_tokens: int, unit_tokens: int) -> tuple[int, ...]:
    """A chain of ``block_tokens``-token hashes (a trace's) as a chain of ``unit_tokens``-token units: every
    m-th hash when a unit spans m blocks (a chained hash names its whole prefix); m sub-unit hashes per block when a
    block spans m units (conservative: sub-units of different blocks never match)."""
    prev = 0
    chained = []
    for h in chain:
        prev = hash((prev, h))
        chained.append(prev)
    if unit_tokens == block_tokens:
        return tuple(chained)
    if unit_tokens % block_tokens == 0:
        m = unit_tokens // block_tokens
        return tuple(chained[m - 1::m])
    m = block_tokens // unit_tokens
    return tuple(hash((h, j)) for h in chained for j in range(m))


class _Pool:
    """A pool of shared texts with Zipf popularity."""

    def __init__(self, spec: SharedTexts, kind: int, class_idx: int, base: Path, field_name: str,
                 rng: np.random.Generator) -> None:
        self.spec = spec
        self.lengths = TokenSampler(spec.tokens, base, field_name).sample(rng, spec.count)
        ranks = np.arange(1, spec.count + 1, dtype=float)
        w = ranks ** -spec.zipf_s
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        self.kind = kind
        self.class_idx = class_idx

    def draw(self, rng: np.random.Generator, n: int) -> list[Segment]:
        idx = np.searchsorted(self.cdf, rng.random(n), side="right").clip(0, len(self.cdf) - 1)
        return [(hash((self.kind, self.class_idx, int(i))), int(self.lengths[i])) for i in idx]


@dataclass(order=True)
class _Conv:
    ready_s: float
    sid: int
    segments: list[Segment] = field(compare=False)
    tokens: int = field(compare=False)
    turn: int = field(compare=False, default=0)


class PrefixStreams:
    """Prompt composition and hash chains of the classes with a ``prefix`` section (state kept across chunks)."""

    def __init__(self, classes: list[RequestClass], base: Path, unit_tokens: int, rng: np.random.Generator) -> None:
        self.classes = classes
        self.unit_tokens = unit_tokens
        self.rng = rng
        self.active = any(c.prefix is not None for c in classes)
        self.system: list[_Pool | None] = []
        self.docs: list[_Pool | None] = []
        for k, c in enumerate(classes):
            p = c.prefix
            f = f"traffic.classes.{k}.prefix"
            self.system.append(_Pool(p.system_prompt, _SYSTEM, k, base, f"{f}.system_prompt.tokens", rng)
                               if p is not None and p.system_prompt is not None else None)
            self.docs.append(_Pool(p.documents, _DOC, k, base, f"{f}.documents.tokens", rng)
                             if p is not None and p.documents is not None else None)
        self.waiting: list[list[_Conv]] = [[] for _ in classes]  # per class: conversations by ready time
        self.next_sid = 0
        self.next_msg = 0

    def _start(self, k: int) -> list[Segment]:
        segs: list[Segment] = []
        sp, dp = self.system[k], self.docs[k]
        if sp is not None:
            segs += sp.draw(self.rng, 1)
        if dp is not None:
            segs += dp.draw(self.rng, dp.spec.per_request)
        return segs

    def apply(self, times: np.ndarray, cls: np.ndarray, prompt: np.ndarray, output: np.ndarray
              ) -> tuple[np.ndarray, list[tuple[int, ...] | None], np.ndarray]:
        """For arrivals at ``times`` of classes ``cls`` with new-message lengths ``prompt``: full prompt lengths,
        hash chains (None for classes without a prefix) and conversation ids (−1: none)."""
        n = len(times)
        out_prompt = prompt.copy()
        chains: list[tuple[int, ...] | None] = [None] * n
        sessions = np.full(n, -1, dtype=np.int64)
        rng = self.rng
        unit = self.unit_tokens
        for i in range(n):
            k = int(cls[i])
            spec = self.classes[k].prefix
            if spec is None:
                continue
            t = float(times[i])
            msg = int(prompt[i])
            ans = int(output[i])
            self.next_msg += 1
            conv = spec.conversation
            if conv is None:
                segs = self._start(k)
                segs.append((hash((_MESSAGE, k, self.next_msg)), msg))
                out_prompt[i] = sum(s[1] for s in segs)
                chains[i] = unit_chain(segs, unit)
                continue
            heap = self.waiting[k]
            c: _Conv | None = None
            while heap and heap[0].ready_s <= t:
                cand = heapq.heappop(heap)
                if cand.ready_s >= t - 10.0 * conv.think_time_s - 60.0 and (
                        cand.tokens + msg + ans <= conv.max_context_tokens):
                    c = cand
                    break
            if c is None:
                segs = self._start(k)
                c = _Conv(t, self.next_sid, segs, sum(s[1] for s in segs))
                self.next_sid += 1
            c.segments.append((hash((_MESSAGE, k, self.next_msg)), msg))
            c.tokens += msg
            out_prompt[i] = c.tokens
            c.segments.append((hash((_ANSWER, k, c.sid, c.turn)), ans))
            c.tokens += ans
            chains[i] = unit_chain(c.segments, unit)  # prompt and answer: the next turn starts with both
            sessions[i] = c.sid
            c.turn += 1
            if rng.random() < 1.0 - 1.0 / conv.turns_mean:
                c.ready_s = t + float(rng.exponential(conv.think_time_s)) if conv.think_time_s > 0 else t
                heapq.heappush(heap, c)
        return out_prompt, chains, sessions
