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
from profiler.errors import FntaxError, InputError
from profiler.output.wire import DEFAULT_SOCKET
from profiler.timings import Timings

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
            click.echo(f"fntax: {_one_line(str(err))}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("fntax: interrupted", err=True)
            sys.exit(INTERRUPTED_EXIT)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as err:
            # A bug, not the user's input: still one line (the traceback is
            # one --debug away), and EX_SOFTWARE rather than Python's 1.
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"fntax: internal error: {type(err).__name__}: {_one_line(str(err))} "
                       f"(run with --debug for the traceback)", err=True)
            sys.exit(FntaxError.exit_code)

    return wrapper  # type: ignore[return-value]


def _one_line(message: str, limit: int = 500) -> str:
    """Messages quote user input (a CSV header, a YAML key): keep them to one bounded line."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


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
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write the capture (JSON, version 1) to this file instead of printing a table "
                   "('-' for standard output; devices and FIFOs are written into, never replaced).")
@click.option("--pid", type=int, help="Attach to this running process and its descendants.")
@click.option("--duration", type=float, help="With --pid: seconds to capture (default: until it exits).")
@click.option("--repeat", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Run the command this many times as fresh processes (cold starts).")
@click.option("--warmup", type=click.IntRange(0, 1_000), default=0, show_default=True,
              help="Extra runs first, left out of the figures.")
@click.option("--memory-mb", type=int, default=128, show_default=True,
              help="Function memory size: sets the billed GB-seconds (and the CPU share with --cpu-share auto).")
@click.option("--prices", default="x86_64", show_default=True, metavar="NAME|FILE",
              help="Price table: x86_64, arm64, or a YAML/JSON file (gb_second, per_million_requests, granularity_ms).")
@click.option("--cpu-share", default="none", show_default=True, metavar="auto|none|FRACTION",
              help="Run in a cgroup with the CPU quota (and memory limit) of the memory size "
                   "(auto: memory/1769 MB of a CPU), or a fixed fraction of a CPU.")
@click.option("--baseline", "baseline_ref", default="baremetal", show_default=True, metavar="NAME|FILE",
              help="Compare with the built-in bare-metal model, a recorded/imported baseline, or a capture file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also draw the tax breakdown (and duration distribution) to PNG or SVG.")
@click.option("--decompressor", "decompressors", multiple=True, metavar="LIB:SYMBOL",
              help="Also time this (library or binary, symbol) as decompression. Repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages on stderr.")
@click.option("--timings", "show_timings", is_flag=True,
              help="Print on stderr what each phase took (compile, attach, probe cost, run, analysis, "
                   "detach) and when the result was out.")
@click.option("--no-agent", is_flag=True,
              help="Load probes here even when an fntax agent runs on the host (by default the capture "
                   "goes through its socket: no compile, attach or detach).")
@click.option("--agent-socket", default=DEFAULT_SOCKET, show_default=True, envvar="FNTAX_AGENT_SOCKET",
              metavar="PATH", help="The running agent's capture socket.")
@click.option("--print-bpf", is_flag=True, hidden=True, help="Print the BPF module source and exit.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@_one_line_errors
def profile(json_path: str | None, pid: int | None, duration: float | None, repeat: int, warmup: int,
            memory_mb: int, prices: str, cpu_share: str, baseline_ref: str, plot_path: str | None,
            decompressors: tuple[str, ...], quiet: bool, show_timings: bool, no_agent: bool, agent_socket: str,
            print_bpf: bool, command: tuple[str, ...]) -> None:
    """Capture a command (after --) or a running pid tree under the probes.

    Reports the kernel's activity, the instruction tax against a baseline,
    and what the invocation costs at Lambda-style GB-second prices.

    \b
    Examples:
      fntax profile -- python3 handler.py
      fntax profile --json out.json --repeat 20 --warmup 2 -- ./bootstrap
      fntax profile --memory-mb 256 --cpu-share auto -- python3 handler.py
      fntax profile --baseline my-metal-box -- ./bootstrap
      fntax profile --pid 1234 --duration 10

    Exits with the command's exit code; fntax's own failures use 64-78.
    """
    from profiler.bpf.probes import ProbeOptions, module_source
    from profiler.capture.session import SessionSettings, run_session

    options = ProbeOptions(extra_decompressors=decompressors, families=_families_for(command, pid),
                           reuse_probe_costs=True)
    if print_bpf:
        click.echo(module_source(options))
        return
    # Bad combinations are bad input (66, like every other bad input), not
    # click's usage exit 2: that stays for unknown options and the like.
    if duration is not None and pid is None:
        raise InputError("--duration needs --pid")
    if duration is not None and not duration > 0:
        raise InputError(f"--duration {duration} must be a positive number of seconds")
    if pid is not None and (repeat > 1 or warmup):
        raise InputError("--repeat/--warmup need a command, not --pid")
    _check_decompressors(decompressors)
    timings = Timings()
    settings = SessionSettings(command=command, pid=pid, duration_seconds=duration, repeat=repeat,
                               warmup=warmup, memory_mb=memory_mb, prices=prices, cpu_share=cpu_share,
                               baseline=baseline_ref, json_path=json_path, plot_path=plot_path, timings=timings,
                               agent_socket=None if no_agent else agent_socket)
    outcome = run_session(settings, options, progress=_progress(quiet),
                          emit=None if json_path else click.echo, warn=_progress(False))
    if show_timings:
        click.echo(timings.line(), err=True)
    if outcome.stop_signal is not None:
        sys.exit(128 + outcome.stop_signal)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _check_decompressors(specs: tuple[str, ...]) -> None:
    """A --decompressor that names no library or symbol is bad input (66), found before any probe loads."""
    if not specs:
        return
    from profiler.bpf.decompress_targets import discover
    from profiler.errors import ConfigError

    try:
        discover(specs)
    except ConfigError as err:
        raise InputError(str(err)) from err


def _families_for(command: tuple[str, ...], pid: int | None) -> tuple[str, ...]:
    """The probe families a capture needs: the KVM family only for a VM monitor.

    Its KVM_RUN hook sits in the raw sys_enter/sys_exit programs (one more
    check per syscall) and its tracepoints fire on every VM exit on the host:
    a capture of something that is not a VM monitor needs none of it."""
    from profiler.attribution.vm import ProcessFacts, match_monitor
    from profiler.bpf.loader import FAMILIES
    from profiler.system import procfs

    if command:
        facts = ProcessFacts(comm=command[0], cmdline=tuple(command))
    elif pid is not None:
        facts = ProcessFacts(comm=procfs.DEFAULT.comm(pid) or "", cmdline=tuple(procfs.DEFAULT.argv(pid) or ()))
    else:
        return FAMILIES
    return FAMILIES if match_monitor(facts) is not None else tuple(f for f in FAMILIES if f != "kvm")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--agent", "agent_url", default="http://127.0.0.1:9636/metrics", show_default=True, metavar="URL",
              help="Where a running fntax agent serves its metrics: doctor shows its map fill, update "
                   "failures and lost events.")
@_one_line_errors
def doctor(as_json: bool, agent_url: str) -> None:
    """Show what this host supports, and which figures are measured or estimated."""
    import json

    from profiler.doctor import render, run_checks

    report = run_checks(agent_url)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else render(report))


@main.command()
@click.argument("capture_file", type=click.Path(dir_okay=False))
@click.option("--top", default=8, show_default=True, help="How many syscalls to list.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw the tax breakdown (and, with --repeat runs, the duration distribution) to PNG or SVG.")
@_one_line_errors
def report(capture_file: str, top: int, plot_path: str | None) -> None:
    """Print a readable report of a capture written by `fntax profile --json`."""
    from profiler.output.capture_json import read_capture
    from profiler.output.report import render

    if plot_path:
        from profiler.files import check_writable_destination
        from profiler.output.plot import check_plot_path

        check_plot_path(plot_path)
        check_writable_destination(plot_path)
    result = read_capture(capture_file)
    click.echo(render(result, top))
    if plot_path:
        from profiler.output.plot import plot_capture

        plot_capture(result, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)


@main.command()
@click.option("--refresh", is_flag=True,
              help="Measure again even if this host has a calibration (and the probes' own costs, at the next "
                   "capture).")
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None,
              help="Calibration file (default /var/lib/fntax/calibration.json).")
@click.option("--quiet", "-q", is_flag=True, help="No progress messages on stderr.")
@_one_line_errors
def calibrate(refresh: bool, path: str | None, quiet: bool) -> None:
    """Measure this host's per-event costs that cannot be timed directly.

    Minor page-fault service time, direct context-switch cost, syscall
    entry/exit, a function call and a clock read: medians of repeated
    microbenchmarks, saved for captures to reuse.
    """
    from pathlib import Path

    from profiler.tax.calibrate import DEFAULT_PATH, ensure_calibration, render_calibration

    if refresh:
        from profiler.bpf.probe_cost import forget_cached_means

        forget_cached_means()  # the probes' own costs, kept by `fntax profile`, are measured again too
    cal = ensure_calibration(Path(path) if path else DEFAULT_PATH, refresh=refresh, progress=_progress(quiet))
    click.echo(render_calibration(cal))


@main.command()
@click.argument("captures", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Also draw them side by side (PNG/SVG).")
@_one_line_errors
def compare(captures: tuple[str, ...], plot_path: str | None) -> None:
    """Compare captures side by side, category by category (A.json B.json ...).

    The last column shows the difference of the last capture from the first.
    """
    from profiler.output.compare import load_for_comparison, render_comparison

    if len(captures) < 2:
        raise InputError(f"compare needs at least two capture files, got {len(captures)}")
    if plot_path:
        from profiler.output.plot import check_plot_path

        check_plot_path(plot_path)
    loaded = load_for_comparison(captures)
    click.echo(render_comparison(loaded))
    if plot_path:
        from profiler.output.plot import plot_comparison

        plot_comparison(loaded, plot_path)


@main.group()
def baseline() -> None:
    """Record, import and list baselines (what the same work costs elsewhere)."""


@baseline.command("record", context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--repeat", type=click.IntRange(1, 10_000), default=1, show_default=True)
@click.option("--warmup", type=click.IntRange(0, 1_000), default=0, show_default=True)
@click.option("--memory-mb", type=int, default=128, show_default=True)
@click.option("--quiet", "-q", is_flag=True)
@_one_line_errors
def baseline_record(name: str, command: tuple[str, ...], repeat: int, warmup: int, memory_mb: int,
                    quiet: bool) -> None:
    """Capture CMD on this (reference) host and store it as baseline NAME."""
    from profiler.tax import baseline as baselines
    from profiler.bpf.probes import ProbeOptions
    from profiler.capture.session import SessionSettings, run_session

    baselines.check_name(name)
    outcome = run_session(SessionSettings(command=command, repeat=repeat, warmup=warmup, memory_mb=memory_mb),
                          ProbeOptions(), progress=_progress(quiet))
    path = baselines.record(name, outcome.data)
    click.echo(f"baseline {name} recorded: {path}")


@baseline.command("import")
@click.argument("name")
@click.option("--durations", "durations_file", required=True, type=click.Path(dir_okay=False),
              help="One duration per line, or CSV with a header (a column named duration*).")
@click.option("--unit", type=click.Choice(["s", "ms", "us", "ns"]), default="s", show_default=True,
              help="Unit of plain numbers (a CSV column named duration_ms etc. sets its own).")
@click.option("--column", help="CSV column to read (default: the first named duration*).")
@_one_line_errors
def baseline_import(name: str, durations_file: str, unit: str, column: str | None) -> None:
    """Import per-invocation durations measured elsewhere (an exokernel, a unikernel, logs)."""
    from profiler.tax import baseline as baselines

    path = baselines.import_durations(name, durations_file, unit, column)
    b = baselines.load(name)
    click.echo(f"baseline {name} imported: {len(b.durations)} durations, mean {b.seconds * 1e3:.3f} ms ({path})")


@baseline.command("list")
@_one_line_errors
def baseline_list() -> None:
    """List the built-in model and the stored baselines."""
    from profiler.tax import baseline as baselines

    rows = baselines.list_baselines()
    click.echo(f"{'name':<20} {'kind':<10} {'mean':>12}  {'created':<26} detail")
    for row in rows:
        mean = "-" if row["seconds"] is None else f"{row['seconds'] * 1e3:.3f} ms"
        click.echo(f"{row['name']:<20} {row['kind']:<10} {mean:>12}  {row['created']:<26} {row['detail']}")


@main.command()
@click.option("--listen", default="127.0.0.1:9636", show_default=True, metavar="ADDR:PORT",
              help="Where to serve /metrics.")
@click.option("--config", "rules_path", type=click.Path(dir_okay=False),
              help="Attribution rules (YAML); default: the embedded rules (see README).")
@click.option("--web-config", "web_config_path", type=click.Path(dir_okay=False),
              help="TLS and basic auth, in the Prometheus exporters' web config format.")
@click.option("--retention", "retention_seconds", type=float, default=300.0, show_default=True,
              help="Seconds an exited function's series stay before folding into function=\"_exited\".")
@click.option("--top-syscalls", type=click.IntRange(1, 100), default=6, show_default=True,
              help="Per-function syscall names kept (the rest become \"other\"); with the default, "
                   "1,000 functions make under 30,000 series.")
@click.option("--interval", "interval_seconds", type=float, default=1.0, show_default=True,
              help="Seconds between folds of the kernel maps.")
@click.option("--prices", default="x86_64", show_default=True, metavar="NAME|FILE",
              help="Price table for fntax_tax_dollars_total.")
@click.option("--default-memory-mb", type=int, default=128, show_default=True,
              help="Memory size of functions whose rule and cgroup name none.")
@click.option("--no-bpf-stats", is_flag=True,
              help="Never sample kernel BPF run-time statistics (by default on 1 s in every 30 s: they "
                   "double each probe's cost while on).")
@click.option("--event-pages", type=int, default=None, envvar="FNTAX_EVENT_PAGES", metavar="PAGES",
              help="Per-CPU perf buffer for fork and exec events, in pages (a power of two; default 256). "
                   "Events that do not fit are counted in fntax_events_lost_total.")
@click.option("--keep-capabilities", "keep_capabilities", default="dac_read_search,sys_ptrace",
              show_default=True, metavar="CAP[,CAP...]|all|none",
              help="Capabilities kept once the probes are loaded (names as in capabilities(7), CAP_ prefix "
                   "optional); every other one is dropped. The default reads other users' /proc/PID/environ; "
                   "add sys_admin to keep sampling BPF run-time statistics; all drops nothing (the port is "
                   "bound before, so a port below 1024 needs nothing kept).")
@click.option("--max-processes", "max_procs", type=click.IntRange(1, 1 << 22), default=16384, show_default=True,
              help="Capacity of the per-process counters map (processes tracked at once).")
@click.option("--max-proc-syscalls", type=click.IntRange(1, 1 << 24), default=65536, show_default=True,
              help="Capacity of the per-process syscall-name map (processes x names).")
@click.option("--max-tasks", type=click.IntRange(1, 1 << 22), default=65536, show_default=True,
              help="Capacity of the per-thread map (threads alive at once).")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True, metavar="PATH",
              help="Serve `fntax profile` captures on this Unix socket (root only, 0600).")
@click.option("--no-socket", is_flag=True, help="Serve no captures: `fntax profile` then loads its own probes.")
@click.option("--quiet", "-q", is_flag=True)
@_one_line_errors
def agent(listen: str, rules_path: str | None, web_config_path: str | None, retention_seconds: float,
          top_syscalls: int, interval_seconds: float, prices: str, default_memory_mb: int, no_bpf_stats: bool,
          event_pages: int | None, keep_capabilities: str, max_procs: int, max_proc_syscalls: int,
          max_tasks: int, socket_path: str, no_socket: bool, quiet: bool) -> None:
    """Run the probes host-wide and export per-function metrics to Prometheus.

    SIGTERM detaches every probe and exits; SIGHUP reloads the rules.
    """
    from profiler.agent.privileges import parse_keep
    from profiler.agent.runner import Agent, AgentSettings
    from profiler.agent.webserver import parse_listen
    from profiler.bpf.events import check_page_count

    parse_listen(listen)
    keep = parse_keep(keep_capabilities)
    if event_pages is not None:
        check_page_count(event_pages)
    if not interval_seconds > 0:
        raise InputError(f"--interval {interval_seconds}: must be a positive number of seconds")
    settings = AgentSettings(listen=listen, rules_path=rules_path, web_config_path=web_config_path,
                             retention_seconds=retention_seconds, top_syscalls=top_syscalls,
                             interval_seconds=interval_seconds, prices=prices,
                             default_memory_mb=default_memory_mb, bpf_stats=not no_bpf_stats,
                             event_pages=event_pages, keep_capabilities=keep, max_procs=max_procs,
                             max_proc_syscalls=max_proc_syscalls, max_tasks=max_tasks,
                             socket_path=None if no_socket else socket_path)
    Agent(settings, _progress(quiet)).run()
