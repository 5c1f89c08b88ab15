"""The `fntax` command line: wires the layers together, nothing more.

Every FntaxError becomes one line on stderr and the error's exit code (64-78,
the sysexits range, so they rarely collide with a profiled command's own).
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import click

from profiler import __version__
from profiler.errors import FntaxError

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED_EXIT = 130


def _one_line_errors(func: F) -> F:
    """Turn fntax's errors into one stderr line and a distinct exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except FntaxError as err:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"fntax: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("fntax: interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT)

    return wrapper  # type: ignore[return-value]


def _progress(quiet: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if not quiet:
            click.echo(f"fntax: {message}", err=True)
    return say


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fntax")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks.")
def main(debug: bool) -> None:
    """fntax: how much of what a function pays for is the operating system.

    Measures the Linux "instruction tax" around a function's own work:
    syscalls, context switches, run-queue wait, page faults, interrupts and
    cold-start decompression, per process tree, with eBPF.
    """


@main.command(context_settings={"ignore_unknown_options": False})
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True),
              help="Write the capture (JSON, version 1) to this file instead of printing a table.")
@click.option("--pid", type=int, help="Attach to this running process and its descendants.")
@click.option("--duration", type=float, help="With --pid: seconds to capture (default: until it exits).")
@click.option("--decompressor", "decompressors", multiple=True, metavar="LIB:SYMBOL",
              help="Also time this (library or binary, symbol) as decompression. Repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages on stderr.")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the BPF module source and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_one_line_errors
def profile(json_path: str | None, pid: int | None, duration: float | None,
            decompressors: tuple[str, ...], quiet: bool, print_bpf: bool,
            command: tuple[str, ...]) -> None:
    """Capture one command (after --) or a running pid tree under the probes.

    \b
    Examples:
      fntax profile -- python3 handler.py
      fntax profile --json out.json -- ./bootstrap
      fntax profile --pid 1234 --duration 10

    Exits with the command's exit code; fntax's own failures use 64-78.
    """
    from profiler.capture import Target, run_capture
    from profiler.files import check_writable_destination, write_json_atomic
    from profiler.kernel import ProbeOptions, module_source
    from profiler.report import capture_json, render_table

    options = ProbeOptions(extra_decompressors=decompressors)
    if print_bpf:
        click.echo(module_source(options))
        return
    if duration is not None and pid is None:
        raise click.UsageError("--duration needs --pid")
    if json_path:
        check_writable_destination(json_path)
    capture = run_capture(Target(command=command, pid=pid, duration_seconds=duration),
                          options, progress=_progress(quiet))
    if json_path:
        write_json_atomic(json_path, capture_json(capture))
        _progress(quiet)(f"capture written to {json_path}")
    else:
        click.echo(render_table(capture))
    if capture.stop_signal is not None:
        sys.exit(128 + capture.stop_signal)
    if capture.exit_code:
        sys.exit(capture.exit_code)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_one_line_errors
def doctor(as_json: bool) -> None:
    """Show what this host supports, and which figures are measured or estimated."""
    import json

    from profiler.doctor import render, run_checks

    report = run_checks()
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else render(report))


@main.command()
@click.argument("capture_file", type=click.Path(dir_okay=False))
@click.option("--top", default=8, show_default=True, help="How many syscalls to list.")
@_one_line_errors
def report(capture_file: str, top: int) -> None:
    """Print a readable report of a capture written by `fntax profile --json`."""
    from profiler.files import read_json
    from profiler.report import CAPTURE_VERSION, render_capture_json

    data = read_json(capture_file, expect_version=CAPTURE_VERSION)
    click.echo(render_capture_json(data, top, source=capture_file))
