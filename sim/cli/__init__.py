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
    "validate": "sim.cli.validate:validate",
    "catalog": "sim.cli.catalog:catalog",
    "size": "sim.cli.size:size",
    "plan": "sim.cli.plan:plan",
    "sweep": "sim.cli.sweep:sweep",
    "traffic": "sim.cli.traffic:traffic",
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
