"""capsim: a discrete-event capacity simulator for LLM inference fleets.

The flow (see README): traffic -> router / spill policy -> nodes (scheduler, KV cache,
step-time model) -> metrics -> cost -> report. The command-line layer (`sim.cli`) is thin.
"""

__version__ = "0.1.0"

import os as _os

# the optional compiled engine (`make native`, sim/_native.py): used only when built and matching the sources
if _os.path.isfile(_os.path.join(_os.path.dirname(_os.path.dirname(__file__)), ".native", "manifest.json")):
    from sim._native import install as _install_native

    _install_native()
