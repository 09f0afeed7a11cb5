"""The ``capsim`` command line: a thin layer over the library. Each subcommand lives in its own module here
and is registered in :data:`COMMANDS`. A :class:`~sim.errors.CapsimError` anywhere becomes one line on stderr
and exit code 2 (no traceback)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from ..errors import CapsimError

# name -> "module:attribute" (imported only when the command is used, to keep start-up fast)
COMMANDS: dict[str, str] = {
    "run": "sim.cli.run:run",
    "compare": "sim.cli.compare:compare",
    "profile": "sim.cli.profile:profile",
    "calibrate": "sim.cli.calibrate:calibrate",
    "catalog": "sim.cli.catalog:catalog",
    "size": "sim.cli.size:size",
    "plan": "sim.cli.plan:plan",
    "sweep": "sim.cli.sweep:sweep",
    "traffic": "sim.cli.traffic:traffic",
}

# name -> the line `capsim --help` shows, so listing the commands imports none of them (pandas, matplotlib and
# scipy stay unloaded: `capsim --help` starts in about 0.1 s). A command missing here is imported for its help.
SHORT_HELP: dict[str, str] = {
    "run": "Simulate a scenario: latency, utilisation, SLO attainment, cost.",
    "compare": "Compare an experiment's spill strategies on the same traffic.",
    "profile": "Memory plan, step times and throughput of one node.",
    "calibrate": "Fit a GPU profile to your own benchmark measurements.",
    "catalog": "List the GPUs, models and software stacks capsim knows.",
    "size": "How many nodes a scenario needs (simulated vs rules of thumb).",
    "sweep": "Run a grid of scenarios × seeds in parallel into one table.",
    "traffic": "Rate-over-time statistics of a traffic shape or trace.",
    "plan": "The cheapest fleet meeting the SLO across GPUs, sizes, precision.",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            text = SHORT_HELP.get(name)
            if text is None:
                cmd = self.get_command(ctx, name)
                if cmd is None or cmd.hidden:
                    continue
                text = cmd.get_short_help_str(formatter.width - 6 - max(len(n) for n in COMMANDS))
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CapsimError as exc:
            click.echo(f"capsim: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsim")
def main() -> None:
    """capsim: simulate an LLM inference fleet before you buy or rent a GPU."""
