"""`capsim --help` starts fast: listing the commands imports none of them."""

from __future__ import annotations

import subprocess
import sys

from sim.cli import COMMANDS

CODE = """import sys
from sim.cli import main
try:
    main(['--help'])
except SystemExit:
    pass
heavy = [m for m in ('pandas', 'matplotlib', 'scipy', 'pyarrow', 'simpy', 'numpy') if m in sys.modules]
cmds = [m for m in sys.modules if m.startswith('sim.cli.')]
print('LOADED', heavy, cmds)
"""


def test_help_lists_every_command_without_importing_them():
    """No command module, and none of pandas / matplotlib / scipy / numpy, is imported by `capsim --help`.
    A command registered without a SHORT_HELP line is imported for its help, which this catches."""
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert f"  {name} " in out
    assert "LOADED [] []" in out, f"capsim --help imported heavy modules (add a SHORT_HELP line?): {out[-300:]}"
