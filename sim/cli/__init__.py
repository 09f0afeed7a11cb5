"""The ``capsim`` command line: a thin layer over the library. Each subcommand lives in its own module here
and is registered in :data:`COMMANDS`.

Exit codes, the same for every command (README.md, "Exit codes"): 0 success; 2 bad input or a file-system
fault (one line on stderr, no traceback: a :class:`~sim.core.errors.CapsimError`, an ``OSError``, a usage error);
130 interrupted by Ctrl-C or SIGTERM (SIGTERM is turned into the same ``KeyboardInterrupt``, so workers are
stopped, temporaries removed and a sweep's finished points kept); 1 an internal error (a bug: traceback).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from sim.core.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, CapsimError, FileError

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

# name -> the line `capsim --help` shows, so listing the commands imports none of them (pandas, matplotlib and
# scipy stay unloaded: `capsim --help` starts in about 0.1 s). A command missing here is imported for its help.
SHORT_HELP: dict[str, str] = {
    "run": "Simulate a scenario: latency, utilisation, SLO attainment, cost.",
    "compare": "Compare an experiment's spill strategies on the same traffic.",
    "profile": "Memory plan, step times and throughput of one node.",
    "calibrate": "Fit a GPU profile to your own benchmark measurements.",
    "validate": "Re-run published measurements: fitted vs held-out errors per GPU family.",
    "catalog": "List the GPUs, models and software stacks capsim knows.",
    "size": "How many nodes a scenario needs (simulated vs rules of thumb).",
    "sweep": "Run a grid of scenarios × seeds in parallel into one table.",
    "traffic": "Rate-over-time statistics of a traffic shape or trace.",
    "plan": "The cheapest fleet meeting the SLO across GPUs, sizes, precision.",
}


def _sigterm_as_interrupt_in(pid: int) -> Callable[[int, Any], None]:
    """A SIGTERM handler that turns SIGTERM into Ctrl-C in process ``pid`` only. A pool worker forked from it
    inherits the handler until its initializer resets it; SIGTERM in that window ends the worker quietly
    (default action) instead of raising KeyboardInterrupt there and printing a traceback on the shared stderr."""

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != pid:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    return handler


def _fail(message: str, code: int) -> None:
    click.echo(f"capsim: error: {' '.join(message.split())}", err=True)
    sys.exit(code)


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

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Click's main with one-line errors: usage errors exit 2 with one line (not the usage block)."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt_in(os.getpid()))
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `capsim` (or a group without arguments)
            click.echo(exc.ctx.get_help() if exc.ctx is not None else "")
            sys.exit(0)
        except click.UsageError as exc:
            hint = f" (see capsim {exc.ctx.info_name} -h)" if exc.ctx is not None and exc.ctx.parent else \
                " (see capsim -h)"
            _fail(exc.format_message() + hint, EXIT_BAD_INPUT)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("capsim: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CapsimError as exc:
            _fail(str(exc), EXIT_BAD_INPUT)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader of our output went away (`capsim validate | head`): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            sys.exit(0)
        except OSError as exc:  # a file-system fault not caught closer to its source
            _fail(str(FileError.from_os(exc)), EXIT_BAD_INPUT)
        except MemoryError:
            _fail("out of memory: the run is too large for this machine (see `capsim run --dry-run`)",
                  EXIT_BAD_INPUT)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capsim")
def main() -> None:
    """capsim: simulate an LLM inference fleet before you buy or rent a GPU."""
