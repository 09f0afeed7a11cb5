"""A hosted LLM API as a spill target: prices, latency, rate limits, failures and a client retry policy.

Model (all times in simulated seconds, one SimPy process per API-bound request):

* **Catalogue.** ``hardware_profiles/apis.yaml`` lists providers' models with the guide's prices (USD per
  million input / output / cached-input tokens, batch-tier discount), decode speed and, where the guide gives
  them, default rate limits. A scenario's ``api`` section picks an entry and may override any field.
* **Admission.** An attempt during an outage window gets a 5xx at once. Otherwise it must pass every limit:
  RPM and TPM token buckets (refilled continuously, holding ``bucket_s`` seconds of the per-minute limit;
  TPM counts the call's input + output tokens) and ``max_concurrency`` calls in progress. Over any limit the
  answer is 429 at once. Neither a 429 nor a 5xx is billed.
* **Latency.** TTFT = ``network_s`` + lognormal(median, p95) + ``ttft_s_per_input_token`` × uncached input
  tokens; the other ``output − 1`` tokens stream at a per-attempt rate, lognormal with mean
  ``output_tokens_per_s`` and CV ``output_rate_cv``. A batch-tier call returns everything at once after a
  lognormal completion time (hours) and is not subject to the synchronous limits or the timeout.
* **Failures.** An admitted attempt fails with probability ``failure_rate`` at a uniform point of its
  duration; the client abandons an attempt still running at ``retry.timeout_s``. Work processed by then is
  billed: nothing before the first token, else all input plus the output tokens streamed so far.
* **Retries.** After a 429, 5xx, failure or timeout the client waits an exponential backoff with jitter and
  tries again, at most ``max_retries`` times; then it gives up: the request fails (``Status.FAILED``) or, with
  ``on_give_up: fleet``, is handed back to the fleet.
* **Randomness.** Every draw is a hash of (seed, request id, attempt, draw index): the same request gets the
  same API behaviour under every strategy that sends it to the API (common random numbers), whatever else
  was spilled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any, Literal

import simpy
from pydantic import Field, ValidationError

from sim.core.config import Api, ApiLatency, ApiLimits, ApiOutage, ApiRetry, Strict, _format_error, read_yaml
from sim.core.errors import ConfigError
from sim.core.paths import api_catalogue_path
from sim.core.rng import stream
from sim.traffic.classes import Z95
from sim.traffic.request import Request, Status

_NORMAL = NormalDist()
_MASK64 = (1 << 64) - 1


# --- catalogue -------------------------------------------------------------------------------------------

class ApiModelEntry(Strict):
    """One provider's model in the catalogue (prices in USD per million tokens)."""

    provider: str
    model: str
    aliases: list[str] = Field(default_factory=list)
    compatible_with: list[str] = Field([], description="self-hosted models it can stand in for")
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    cached_input_usd_per_mtok: float | None = Field(None, ge=0)
    batch_discount: float = Field(0.0, ge=0, lt=1)
    latency: ApiLatency = ApiLatency()
    limits: ApiLimits = ApiLimits()
    failure_rate: float = Field(0.0, ge=0, le=1)
    notes: str = ""
    sources: list[str] = Field(default_factory=list)


def catalogue_path() -> Path:
    return api_catalogue_path()


@lru_cache(maxsize=4)
def _load_catalogue(path: str) -> tuple[ApiModelEntry, ...]:
    raw = read_yaml(Path(path))
    items = raw.get("apis") if isinstance(raw, dict) else None
    if not isinstance(items, list):
        raise ConfigError(path, "apis", "expected a list of provider models")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(ApiModelEntry.model_validate(item))
        except ValidationError as exc:
            field, msg = _format_error(exc)
            raise ConfigError(path, f"apis.{i}.{field}", msg) from None
    return tuple(out)


def catalogue(path: Path | None = None) -> tuple[ApiModelEntry, ...]:
    """All entries of the API catalogue."""
    return _load_catalogue(str(path or catalogue_path()))


def find_api_model(provider: str, model: str | None, source: str = "scenario") -> ApiModelEntry:
    """The catalogue entry for ``provider``/``model`` (case-insensitive; aliases allowed); a provider with a
    single model may omit ``model``."""
    entries = [e for e in catalogue() if e.provider.lower() == provider.lower()]
    if not entries:
        known = sorted({e.provider for e in catalogue()})
        raise ConfigError(source, "api.provider", f"unknown provider '{provider}' (known: {', '.join(known)})")
    if model is None:
        if len(entries) == 1:
            return entries[0]
        raise ConfigError(source, "api.model", f"provider '{provider}' has several models: "
                          f"{', '.join(e.model for e in entries)}")
    key = model.lower()
    for e in entries:
        if key == e.model.lower() or key in (a.lower() for a in e.aliases):
            return e
    raise ConfigError(source, "api.model", f"unknown model '{model}' for provider '{provider}' "
                      f"(known: {', '.join(e.model for e in entries)})")


@dataclass(frozen=True)
class ApiSpec:
    """A scenario's API with catalogue defaults and overrides resolved."""

    name: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cached_input_usd_per_mtok: float
    batch_discount: float
    latency: ApiLatency
    limits: ApiLimits
    failure_rate: float
    retry: ApiRetry
    outages: tuple[ApiOutage, ...]
    on_give_up: Literal["fail", "fleet"]

    def price_usd(self, input_tokens: int, cached_tokens: int, output_tokens: int, batch: bool = False) -> float:
        """What one processed call costs: uncached input, cached input and output at their prices."""
        usd = ((input_tokens - cached_tokens) * self.input_usd_per_mtok
               + cached_tokens * self.cached_input_usd_per_mtok
               + output_tokens * self.output_usd_per_mtok) / 1e6
        return usd * (1.0 - self.batch_discount) if batch else usd


def resolve_api(api: Api, source: str = "scenario") -> ApiSpec:
    """Merge the catalogue entry (if any) with the scenario's overrides."""
    entry = find_api_model(api.provider, api.model, source) if api.provider is not None else None

    def pick(name: str, default: Any) -> Any:
        v = getattr(api, name)
        if v is not None:
            return v
        return getattr(entry, name) if entry is not None else default

    inp = pick("input_usd_per_mtok", None)
    cached = api.cached_input_usd_per_mtok
    if cached is None:
        cached = entry.cached_input_usd_per_mtok if entry is not None and api.input_usd_per_mtok is None else None
    name = f"{entry.provider}/{entry.model}" if entry is not None else "custom"
    return ApiSpec(
        name=name,
        input_usd_per_mtok=inp,
        output_usd_per_mtok=pick("output_usd_per_mtok", None),
        cached_input_usd_per_mtok=inp if cached is None else cached,
        batch_discount=pick("batch_discount", 0.0),
        latency=pick("latency", ApiLatency()),
        limits=pick("limits", ApiLimits()),
        failure_rate=pick("failure_rate", 0.0),
        retry=api.retry,
        outages=tuple(api.outages),
        on_give_up=api.on_give_up,
    )


# --- mechanics -------------------------------------------------------------------------------------------
class TokenBucket:
    """Holds up to ``capacity`` units, refilled at ``rate_per_s``; starts full."""

    __slots__ = ("capacity", "rate_per_s", "level", "t")

    def __init__(self, capacity: float, rate_per_s: float) -> None:
        self.capacity = capacity
        self.rate_per_s = rate_per_s
        self.level = capacity
        self.t = 0.0

    def refill(self, now: float) -> float:
        if now > self.t:
            self.level = min(self.capacity, self.level + (now - self.t) * self.rate_per_s)
            self.t = now
        return self.level


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class HashUniform:
    """Uniform (0, 1) draws that depend only on (key, request id, attempt, draw index)."""

    def __init__(self, key: int) -> None:
        self.key = key & _MASK64

    def __call__(self, rid: int, attempt: int, j: int) -> float:
        h = _splitmix64(self.key ^ _splitmix64((rid << 16) ^ (attempt << 4) ^ j))
        return ((h >> 11) + 0.5) / float(1 << 53)


def lognormal_from_median_p95(median: float, p95: float, u: float) -> float:
    sigma = math.log(p95 / median) / Z95 if p95 > median else 0.0
    return median * math.exp(sigma * _NORMAL.inv_cdf(u))


@dataclass
class ApiStats:
    """Counters of one run. ``calls`` counts every attempt (including those answered 429 or 5xx)."""

    requests: int = 0  # requests handed to the API
    calls: int = 0
    rate_limited: int = 0  # attempts answered 429
    server_errors: int = 0  # attempts answered 5xx (outage)
    transient_failures: int = 0  # admitted attempts that failed part-way
    timeouts: int = 0  # admitted attempts abandoned at timeout_s
    retries: int = 0  # attempts after a request's first
    served: int = 0  # requests answered (status spilled)
    failed: int = 0  # requests given up on and failed
    returned_to_fleet: int = 0  # requests given up on and handed back to the fleet
    usd: float = 0.0
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0
    wasted_usd: float = 0.0  # billed for attempts that did not return an answer
    peak_concurrency: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class HostedApi:
    """The API endpoint and the client's retry loop. ``submit(req)`` starts the calls; the request ends with
    ``on_done(req)`` (status spilled or failed) or, when retries give up and ``on_give_up`` is ``fleet``,
    with ``give_back(req)``."""

    def __init__(
        self,
        env: simpy.Environment,
        spec: ApiSpec,
        seed: int,
        on_done: Callable[[Request], None],
        give_back: Callable[[Request], None] | None = None,
    ) -> None:
        self.env = env
        self.spec = spec
        self.on_done = on_done
        self.give_back = give_back
        self.stats = ApiStats()
        self.u = HashUniform(int(stream(seed, "api").integers(0, 2**63)))
        lim = spec.limits
        per_s = lim.bucket_s / 60.0

        def bucket(per_min: float | None) -> TokenBucket | None:
            return None if per_min is None else TokenBucket(per_min * per_s, per_min / 60.0)

        self.rpm = bucket(lim.rpm)
        self.tpm = bucket(lim.tpm)
        self.input_tpm = bucket(lim.input_tpm)
        self.output_tpm = bucket(lim.output_tpm)
        self.in_progress = 0
        self.outstanding = 0  # requests submitted and not yet done or given back (in a call or backing off)
        lat = spec.latency
        self._rate_sigma = math.sqrt(math.log1p(lat.output_rate_cv**2))

    # -- interface --------------------------------------------------------------------------------------
    def submit(self, req: Request, batch: bool = False) -> None:
        """Hand ``req`` to the API now (batch tier if ``batch``)."""
        self.stats.requests += 1
        self.outstanding += 1
        self.env.process(self._client(req, batch))

    # -- pieces -----------------------------------------------------------------------------------------
    def _in_outage(self, now: float) -> bool:
        return any(o.start_s <= now < o.end_s for o in self.spec.outages)

    def _admit(self, req: Request, now: float) -> bool:
        """Take the call's share of every limit, or return False (a 429) leaving all buckets untouched."""
        lim = self.spec.limits
        if lim.max_concurrency is not None and self.in_progress >= lim.max_concurrency:
            return False
        want = (
            (self.rpm, 1.0),
            (self.tpm, float(req.prompt_tokens + req.output_tokens)),
            (self.input_tpm, float(req.prompt_tokens)),
            (self.output_tpm, float(req.output_tokens)),
        )
        for b, n in want:
            if b is not None and b.refill(now) < n:
                return False
        for b, n in want:
            if b is not None:
                b.level -= n
        return True

    def _backoff_s(self, req: Request, retry_k: int) -> float:
        r = self.spec.retry
        cap = min(r.backoff_max_s, r.backoff_base_s * r.multiplier ** (retry_k - 1))
        u = self.u(req.rid, retry_k, 7)
        if r.jitter == "full":
            return cap * u
        if r.jitter == "equal":
            return cap / 2 + cap / 2 * u
        return cap

    def _bill(self, req: Request, in_tok: int, cached: int, out_tok: int, batch: bool, answered: bool) -> None:
        usd = self.spec.price_usd(in_tok, cached, out_tok, batch)
        req.api_cost_usd += usd
        st = self.stats
        st.usd += usd
        st.billed_input_tokens += in_tok
        st.billed_output_tokens += out_tok
        if not answered:
            st.wasted_usd += usd

    def _client(self, req: Request, batch: bool) -> Generator[simpy.Event, Any, None]:  # a SimPy process
        env, spec, st = self.env, self.spec, self.stats
        lat, retry = spec.latency, spec.retry
        attempt = 0
        while True:
            attempt += 1
            req.api_attempts += 1
            st.calls += 1
            if attempt > 1:
                st.retries += 1
            now = env.now
            if self._in_outage(now):
                st.server_errors += 1
                req.api_errors += 1
            elif not batch and not self._admit(req, now):
                st.rate_limited += 1
                req.api_429s += 1
            else:
                rid, u = req.rid, self.u
                if batch:
                    ttft = lognormal_from_median_p95(lat.batch_median_s, lat.batch_p95_s, u(rid, attempt, 0))
                    dur, rate = ttft, math.inf
                else:
                    ttft = (lat.network_s
                            + lognormal_from_median_p95(lat.ttft_median_s, lat.ttft_p95_s, u(rid, attempt, 0))
                            + lat.ttft_s_per_input_token * (req.prompt_tokens - req.cached_tokens))
                    rate = lat.output_tokens_per_s * math.exp(
                        self._rate_sigma * _NORMAL.inv_cdf(u(rid, attempt, 1)) - self._rate_sigma**2 / 2
                    ) if self._rate_sigma > 0 else lat.output_tokens_per_s
                    dur = ttft + (req.output_tokens - 1) / rate
                end, outcome = dur, "ok"
                if spec.failure_rate > 0 and u(rid, attempt, 2) < spec.failure_rate:
                    end, outcome = u(rid, attempt, 3) * dur, "failed"
                if not batch and retry.timeout_s is not None and retry.timeout_s < end:
                    end, outcome = retry.timeout_s, "timeout"
                self.in_progress += 1
                st.peak_concurrency = max(st.peak_concurrency, self.in_progress)
                yield env.timeout(end)
                self.in_progress -= 1
                if outcome == "ok":
                    self._bill(req, req.prompt_tokens, req.cached_tokens, req.output_tokens, batch, True)
                    if req.first_token_s < 0:  # a request evicted mid-generation keeps its first token
                        req.first_token_s = now + ttft
                    req.finish_s = now + dur
                    req.status = Status.SPILLED
                    st.served += 1
                    self.outstanding -= 1
                    self.on_done(req)
                    return
                if end >= ttft:  # prefill done and some tokens streamed: processed work is billed
                    streamed = req.output_tokens if batch else min(req.output_tokens, 1 + int((end - ttft) * rate))
                    self._bill(req, req.prompt_tokens, req.cached_tokens, streamed, batch, False)
                if outcome == "failed":
                    st.transient_failures += 1
                else:
                    st.timeouts += 1
                req.api_errors += 1
            if attempt > retry.max_retries:
                break
            yield env.timeout(self._backoff_s(req, attempt))
        # retries exhausted
        if spec.on_give_up == "fleet" and self.give_back is not None:
            st.returned_to_fleet += 1
            self.outstanding -= 1
            self.give_back(req)
            return
        st.failed += 1
        req.status = Status.FAILED
        req.finish_s = env.now
        self.outstanding -= 1
        self.on_done(req)


__all__ = [
    "ApiModelEntry",
    "ApiSpec",
    "ApiStats",
    "HostedApi",
    "TokenBucket",
    "catalogue",
    "find_api_model",
    "resolve_api",
]
