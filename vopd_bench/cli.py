"""The `vopd-bench` command line. Each subcommand is one module in `vopd_bench/commands/` that
defines a click command named `command`; adding a file adds a command."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from vopd_bench import __version__, commands
from vopd_bench.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED, IncompleteRun, UserError


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used (keeps `--help` and errors fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(commands.__path__) if not m.name.startswith("_"))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.list_commands(ctx):
            return None
        mod = importlib.import_module(f"vopd_bench.commands.{name.replace('-', '_')}")
        return mod.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vopd-bench")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Measure and close the regional-to-global perception gap of multimodal LLMs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "filelock", "PIL", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Entry point; exit codes as documented in `vopd_bench.errors`: user errors become one line on stderr
    and exit 2, an incomplete run (requests still failing after retries) exits 3."""
    try:
        cli.main(args=argv, prog_name="vopd-bench", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except IncompleteRun as e:
        click.echo(f"incomplete: {e}", err=True)
        sys.exit(EXIT_INCOMPLETE)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
