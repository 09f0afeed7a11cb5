"""Demand as a planner states it: tokens per day, converted to the mean arrival rate the simulator needs.

``traffic.output_tokens_per_day = D`` means a mean of ``D / 86 400`` output tokens per second, so the mean
request rate is ``rate_rps = D / 86 400 / E[output tokens per request]``, where the expectation is over the
class mix (static ``share`` weights, normalised; ``share_by_hour`` is ignored) of each class's output-token
distribution. ``traffic.tokens_per_day`` does the same with input + output tokens per request. A traffic
``shape`` is normalised to mean 1, so the shape keeps the daily total and only moves it between hours.

Means: fixed → the value; lognormal → ``median · exp(σ²/2)`` (before rounding and clipping to ``[min, max]``,
which move it by well under 1 % for the shipped mixes); empirical / PMF → the mean of the clipped values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sim.core.errors import ConfigError

if TYPE_CHECKING:
    from sim.core.config import Traffic

SECONDS_PER_DAY = 86_400.0


def mean_tokens_per_request(traffic: Traffic, base_dir: Path) -> tuple[float, float]:
    """Share-weighted mean (input, output) tokens per request of the traffic's classes."""
    from sim.traffic.classes import ClassMix

    return ClassMix(traffic.classes, base_dir, 16).mean_tokens()


def demand_to_rate(traffic: Traffic, base_dir: Path, source: str = "scenario") -> dict[str, float]:
    """The mean request rate implied by ``output_tokens_per_day`` or ``tokens_per_day``, with the figures used:
    ``{rate_rps, <the given key>, mean_input_tokens, mean_output_tokens}``."""
    try:
        mean_in, mean_out = mean_tokens_per_request(traffic, base_dir)
    except ConfigError as exc:
        raise ConfigError(source, exc.field, exc.problem) from None
    if traffic.output_tokens_per_day is not None:
        key, per_day, per_req = "output_tokens_per_day", traffic.output_tokens_per_day, mean_out
    elif traffic.tokens_per_day is not None:
        key, per_day, per_req = "tokens_per_day", traffic.tokens_per_day, mean_in + mean_out
    else:
        raise ConfigError(source, "traffic", "no demand given (rate_rps, output_tokens_per_day or tokens_per_day)")
    if per_req <= 0:
        raise ConfigError(source, f"traffic.{key}", "the class mix has no tokens per request")
    return {"rate_rps": per_day / SECONDS_PER_DAY / per_req, key: per_day,
            "mean_input_tokens": mean_in, "mean_output_tokens": mean_out}


def tokens_per_day(rate_rps: float, mean_tokens: float) -> float:
    """The inverse: tokens per day at ``rate_rps`` requests/s of ``mean_tokens`` tokens each."""
    return rate_rps * SECONDS_PER_DAY * mean_tokens
