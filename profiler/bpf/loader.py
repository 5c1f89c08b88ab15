"""Build, compile and attach the BPF module; the only place bcc is imported.

The module is the shared header followed by each probe family, configured
only through -D flags. After compiling, every declared map is checked against
the header (profiler.bpf.contracts) before anything is attached.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from profiler.bpf import arch, decompress_targets
from profiler.bpf.contracts import (
    PROBES_DIR,
    SHARED_HEADER,
    MapDecl,
    check_figures,
    check_loaded,
    family_path,
    load_header,
    parse_declarations,
)
from profiler.errors import EnvironmentProblem, ProbeAttachError, ProbeLoadError
from profiler.system import host

FAMILIES: tuple[str, ...] = ("syscalls", "sched", "faults", "irq", "decompress", "kvm")

# perf software event ids (include/uapi/linux/perf_event.h).
_PERF_TYPE_SOFTWARE = 1
_PERF_FAULT_PROGRAMS = ((5, "fntax_fault_minor"), (6, "fntax_fault_major"))  # PAGE_FAULTS_MIN / _MAJ


@dataclass(frozen=True)
class ProbeOptions:
    """What to load. Bounds become -D flags; nothing edits the C text."""

    families: tuple[str, ...] = FAMILIES
    trace_all: bool = False
    events: bool = False  # fork/exec events to user space (the agent)
    # With events: the environment variable whose value execve's envp carries
    # to the exec event (the agent's first env rule).
    exec_env_name: str | None = None
    max_tasks: int = 65536
    max_procs: int = 16384
    max_proc_syscalls: int = 65536
    max_decomp: int = 16384
    extra_decompressors: tuple[str, ...] = ()  # "PATH_OR_LIB:SYMBOL"
    # Kernel BPF run-time statistics add two clock reads to every program
    # run, so by default they are on only while a short synthetic tracked
    # workload runs at load (profiler.bpf.probe_cost), which gives each
    # probe's mean run time for the observer figure. run_time_stats keeps
    # them on throughout.
    run_time_stats: bool = False
    measure_probe_costs: bool = True
    # Reuse the probe costs measured before for the same probes on this host
    # (`fntax profile`; profiler.bpf.probe_cost.cached_means).
    reuse_probe_costs: bool = False
    # Per-workload timelines (busy / waiting / blocked wall time): `fntax
    # profile` only; the agent's every-process tracking would contend on them.
    timeline: bool = True
    # KVM: let perf users (perf kvm stat) keep seeing the kvm tracepoints
    # (costs about 0.5 us more per exit that reaches the VM monitor).
    kvm_pass_to_perf: bool = False
    max_proc_kvm: int = 16384
    probes_dir: Path = PROBES_DIR

    def cflags(self) -> list[str]:
        return [
            f"-I{self.probes_dir}",
            f"-DFNTAX_MAX_TASKS={self.max_tasks}",
            f"-DFNTAX_MAX_PROCS={self.max_procs}",
            f"-DFNTAX_MAX_PROC_SYSCALLS={self.max_proc_syscalls}",
            f"-DFNTAX_MAX_DECOMP={self.max_decomp}",
            f"-DFNTAX_TRACE_ALL={1 if self.trace_all else 0}",
            f"-DFNTAX_EVENTS={1 if self.events else 0}",
            f"-DFNTAX_TIMELINE={1 if self.timeline else 0}",
            f"-DFNTAX_MAX_PROC_KVM={self.max_proc_kvm}",
            f"-DFNTAX_KVM_PASS_TO_PERF={1 if self.kvm_pass_to_perf else 0}",
            # The KVM family hooks KVM_RUN into the raw sys_enter/sys_exit
            # programs, which come before it in the module: they must know.
            *(["-DFNTAX_KVM=1", *arch.kvm_probe_cflags()] if "kvm" in effective_families(self) else []),
            *([f'-DFNTAX_ENV_NAME="{self.exec_env_name}"'] if self.events and self.exec_env_name else []),
            *arch.probe_cflags(),
            "-Wno-macro-redefined",
        ]


def effective_families(options: ProbeOptions) -> tuple[str, ...]:
    """The families to build here: kvm only where its tracepoints exist (kvm loaded)."""
    if "kvm" in options.families and host.kvm_tracepoints_missing():
        return tuple(f for f in options.families if f != "kvm")
    return options.families


def module_source(options: ProbeOptions) -> str:
    """The BPF module text: the shared header first, then each family.

    bcc rewrites map declarations and TRACEPOINT_PROBEs only in its main text,
    so the header's text leads; its include guard turns each family's own
    `#include "fntax.h"` into a no-op.
    """
    parts = [(options.probes_dir / SHARED_HEADER).read_text()]
    for family in effective_families(options):
        parts.append(f"/* ---- {family}.bpf.c ---- */\n")
        parts.append(family_path(family, options.probes_dir).read_text())
    return "\n".join(parts)


def check_environment() -> None:
    """Fail early, with one actionable line, when probes cannot load here."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("root is needed to load eBPF probes (try: sudo fntax ...)")
    try:
        import bcc  # noqa: F401
    except ImportError as err:
        raise EnvironmentProblem(
            "bcc is not importable: install python3-bpfcc and run fntax from .venv (make bootstrap)"
        ) from err
    host.ensure_tracefs()
    build = Path(f"/lib/modules/{os.uname().release}/build")
    if not build.exists():
        raise EnvironmentProblem(f"no kernel headers at {build}: run `make bootstrap` to install or link them")


def probe_label(program: str) -> str:
    """The one name of a probe program in captures, metrics and logs.

    'tracepoint__sched__sched_switch' -> 'sched:sched_switch' (the tracepoint),
    'raw_tracepoint__sys_enter' -> 'sys_enter', 'fntax_fault_minor' -> 'fault_minor',
    'fntax_decomp_enter_0' -> 'decomp_enter_libz'."""
    if program.startswith("tracepoint__"):
        category, _, name = program.removeprefix("tracepoint__").partition("__")
        return f"{category}:{name}"
    name = program.removeprefix("raw_tracepoint__").removeprefix("fntax_")
    lib_id = name.removeprefix("decomp_enter_")
    if name.startswith("decomp_enter_") and lib_id.isdigit():
        libraries = decompress_targets.LIBRARIES
        index = int(lib_id)
        name = f"decomp_enter_{libraries[index] if index < len(libraries) else 'extra' + lib_id}"
    return name


@dataclass
class Attached:
    """Where each probe program is attached (probe label -> attach points)."""

    points: dict[str, list[str]] = field(default_factory=dict)

    def add(self, program: str, point: str) -> None:
        self.points.setdefault(probe_label(program), []).append(point)


@contextlib.contextmanager
def _translate(error: type[Exception], what: str) -> Iterator[None]:
    try:
        yield
    except Exception as err:  # bcc raises bare Exception on every failure
        raise error(f"{what}: {err}") from err


def compile_module(options: ProbeOptions) -> Any:
    """Compile and load the module; check every declared map against the header."""
    from bcc import BPF  # the one place bcc is imported

    header = load_header(options.probes_dir)
    check_figures(header)
    with _translate(ProbeLoadError, "probes failed to compile or load"):
        bpf = BPF(text=module_source(options), cflags=options.cflags())
    try:
        decls: list[MapDecl] = []
        for family in effective_families(options):
            decls.extend(parse_declarations(family_path(family, options.probes_dir), header))
        for decl in decls:
            try:
                table = bpf.get_table(decl.name)
            except KeyError as err:
                if decl.optional:
                    continue
                raise ProbeLoadError(f"{decl.file}: declared map {decl.name} is not in the loaded object") from err
            # Per-CPU tables expose one value per CPU as Leaf; sLeaf is one CPU's.
            check_loaded(header, decl, int(table.ttype), table.Key, getattr(table, "sLeaf", table.Leaf))
    except BaseException:
        bpf.cleanup()
        raise
    return bpf


def compile_text(text: str, cflags: list[str] | None = None) -> Any:
    """Compile a small standalone BPF program (doctor's trials, the bench's reference probes)."""
    from bcc import BPF

    return BPF(text=text, cflags=cflags or [])


def bcc_version() -> str:
    """The installed bcc's version (ImportError when bcc is missing)."""
    import bcc

    return str(getattr(bcc, "__version__", "?"))


def trial_load(text: str, attach: Callable[[Any], None] | None = None) -> None:
    """Compile, load and optionally attach a small program, then release it (doctor)."""
    bpf = compile_text(text)
    try:
        if attach:
            attach(bpf)
    finally:
        bpf.cleanup()


def attach_all(bpf: Any, options: ProbeOptions) -> tuple[Attached, dict[int, str]]:
    """Attach what bcc does not attach by itself; return where, and decoder library ids."""
    attached = Attached()
    for prefix, names in (("tracepoint__", bpf.tracepoint_fds), ("raw_tracepoint__", bpf.raw_tracepoint_fds)):
        for name in names:
            point = name.decode() if isinstance(name, bytes) else str(name)
            attached.add(prefix + point.replace(":", "__"), point)
    if "faults" in options.families:
        for config, program in _PERF_FAULT_PROGRAMS:
            with _translate(ProbeAttachError, f"faults.bpf.c: perf software event {program}"):
                bpf.attach_perf_event(ev_type=_PERF_TYPE_SOFTWARE, ev_config=config, fn_name=program,
                                      sample_period=1)
            attached.add(program, f"perf:software:{config}")
    libraries: dict[int, str] = dict(enumerate(decompress_targets.LIBRARIES))
    if "decompress" in options.families:
        for target in decompress_targets.discover(options.extra_decompressors):
            with _translate(ProbeAttachError, f"decompress.bpf.c: uprobe {target.path}:{target.symbol}"):
                bpf.attach_uprobe(name=target.path, sym=target.symbol, fn_name=target.entry_fn)
                if target.return_fn:
                    bpf.attach_uretprobe(name=target.path, sym=target.symbol, fn_name=target.return_fn)
            attached.add(target.entry_fn, f"{target.library}:{target.symbol}")
            libraries[target.lib_id] = target.library
    return attached, libraries


def detach_all(bpf: Any) -> None:
    """Detach every probe and free every map.

    Each uprobe's release waits for a kernel grace period (~0.1 s); releasing
    them from several threads overlaps the waits."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(bpf.detach_uprobe_event, list(bpf.uprobe_fds)))
    bpf.cleanup()
