"""capsim: a discrete-event capacity simulator for LLM inference fleets.

The flow (see README): traffic -> router / spill policy -> nodes (scheduler, KV cache,
step-time model) -> metrics -> cost -> report. The command-line layer (`sim.cli`) is thin.
"""

__version__ = "0.1.0"
