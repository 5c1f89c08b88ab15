"""fntax's Grafana dashboards as code, written with grafana-foundation-sdk.

    python -m dashboards.generate            # (re)write dashboards/json/*.json
    python -m dashboards.generate --check    # exit 1 if the committed JSON differs

Each dashboard is declared as data (DashboardSpec: rows of PanelSpec, each
with its PromQL queries), so tests and the preview renderer read the same
declarations the JSON is built from. The JSON is Grafana's classic dashboard
format (the SDK's current schemaVersion) with a `$datasource` Prometheus
variable: no data-source uid is written anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import LegendDisplayMode, LegendPlacement, StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).resolve().parent / "json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
PANEL_TYPES = frozenset({"timeseries", "stat", "table", "bargauge"})

# Label selectors the panels share. Grafana expands each variable; a multi-value
# or "All" selection becomes a regex, hence =~ everywhere.
I = 'instance=~"$instance"'
F = 'instance=~"$instance", function=~"$function", kind=~"$kind"'
VM = 'instance=~"$instance", kind="vm", function=~"$vm"'
FLEET = 'instance=~"$instance", function=~"$function"'
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PanelSpec:
    title: str
    type: str  # one of PANEL_TYPES
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    stacked: bool = False

    @property
    def instant(self) -> bool:
        """Tables, stats and bar gauges show one value per series: instant queries."""
        return self.type in {"table", "stat", "bargauge"}


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]  # from VARIABLES, in order
    rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...]
    tags: tuple[str, ...] = field(default=("fntax",))

    @property
    def panels(self) -> list[PanelSpec]:
        return [panel for _title, panels in self.rows for panel in panels]


def _q(expr: str, legend: str = "") -> tuple[Query, ...]:
    return (Query(expr, legend),)


def ts(title: str, expr: str, legend: str = "", unit: str = "short", description: str = "",
       width: int = 12, stacked: bool = False) -> PanelSpec:
    return PanelSpec(title, "timeseries", _q(expr, legend), unit, description, width, stacked=stacked)


HOST = DashboardSpec(
    uid="fntax-host-overview",
    title="fntax / Host overview",
    description="The instruction tax on one host: how much of what its functions pay for is the OS.",
    variables=("datasource", "instance"),
    rows=(
        ("Instruction tax", (
            PanelSpec("Host instruction-tax ratio", "stat",
                      _q(f"fntax:host_tax_ratio:rate5m{{{I}}}", "{{instance}}"), "percentunit",
                      "Tax seconds over the CPU time every function occupied or waited for (5 m rate).", 6, 5),
            PanelSpec("Tax dollars per hour", "stat",
                      _q(f"fntax:host_tax_dollars_per_hour:rate5m{{{I}}}", "{{instance}}"), "currencyUSD",
                      "What the tax costs per hour at the agent's prices (tax seconds x memory GB x price).", 6, 5),
            PanelSpec("Functions", "stat",
                      _q(f"count by (instance) (fntax_tax_dollars_total{{{I}}})", "{{instance}}"), "short",
                      "Functions the agent reports (live, plus _exited and host).", 6, 5),
            PanelSpec("Processes started per second", "stat",
                      _q(f"sum by (instance) (rate(fntax_processes_started_total{{{I}}}{RATE}))", "{{instance}}"),
                      "ops", "Process starts attributed to any function: cold starts and per-event children.", 6, 5),
            PanelSpec("Instruction-tax ratio over time", "timeseries",
                      (Query(f"fntax:host_tax_ratio:rate5m{{{I}}}", "host {{instance}}"),
                       Query(f"topk(5, fntax:function_tax_ratio:rate5m{{{I}}})", "{{function}} ({{instance}})")),
                      "percentunit", "The host's ratio and the five most-taxed functions' ratios.", 12),
            ts("Tax by category", f"sum by (category) (rate(fntax_tax_seconds_total{{{I}}}{RATE}))",
               "{{category}}", "s", "Tax seconds per second, stacked by category (the README's tax model).",
               12, stacked=True),
        )),
        ("Top functions", (
            PanelSpec("Top functions by tax dollars per hour", "table",
                      _q(f"topk(10, sum by (function, kind) (fntax:function_tax_dollars_per_hour:rate5m{{{I}}}))"),
                      "currencyUSD", "The ten functions whose tax costs most now (5 m rate).", 12, 9),
            PanelSpec("Top functions by tax seconds", "table",
                      _q(f"topk(10, sum by (function, kind) (increase(fntax_tax_seconds_total{{{I}}}[$__range])))"),
                      "s", "The ten functions with the most tax seconds over the dashboard's time range.", 12, 9),
        )),
        ("Cold starts and CPU share", (
            ts("Cold-start decompression by library",
               f"sum by (library) (rate(fntax_decompression_seconds_total{{{I}}}{RATE}))", "{{library}}", "s",
               "On-CPU time inside decoders (zlib, zstd, lzma, bz2, lz4) per second: images unpacked at start.",
               12, stacked=True),
            ts("CPU-share wait by function",
               f"topk(10, sum by (function) (rate(fntax_cpu_share_wait_seconds_total{{{I}}}{RATE})))",
               "{{function}}", "s",
               "Time throttled at the cgroup CPU quota: the share the function bought, not OS overhead.", 12),
        )),
    ),
)

FUNCTION = DashboardSpec(
    uid="fntax-function",
    title="fntax / Function drill-down",
    description="One function's instruction tax, part by part, and what it costs.",
    variables=("datasource", "instance", "function", "kind"),
    rows=(
        ("Tax and cost", (
            ts("Instruction-tax ratio", f"fntax:function_tax_ratio:rate5m{{{F}}}", "{{function}} ({{instance}})",
               "percentunit", "Tax seconds over on-CPU + run-queue wait seconds (5 m rate).", 8),
            ts("Tax by category", f"sum by (category) (rate(fntax_tax_seconds_total{{{F}}}{RATE}))",
               "{{category}}", "s", "Tax seconds per second, stacked by category.", 8, stacked=True),
            ts("Tax dollars per hour", f"sum by (function) (fntax:function_tax_dollars_per_hour:rate5m{{{F}}})",
               "{{function}}", "currencyUSD", "Tax seconds x memory GB x price per GB-second, per hour.", 8),
            ts("Tax seconds per invocation", f"fntax:function_tax_seconds_per_invocation:rate5m{{{F}}}",
               "{{function}} ({{instance}})", "s", "Recording rule: tax seconds over invocations.", 8),
            ts("Tax dollars per million invocations",
               f"fntax:function_tax_dollars_per_million_invocations:rate5m{{{F}}}",
               "{{function}} ({{instance}})", "currencyUSD", "Recording rule: tax dollars x 1e6 over invocations.", 8),
            PanelSpec("Invocations and process starts", "timeseries",
                      (Query(f"sum by (function) (rate(fntax_invocations_total{{{F}}}{RATE}))", "invocations"),
                       Query(f"sum by (function) (rate(fntax_processes_started_total{{{F}}}{RATE}))",
                             "processes started")),
                      "ops", "Per second.", 8),
        )),
        ("Syscalls and faults", (
            ts("Syscalls by name", f"sum by (syscall) (rate(fntax_syscalls_by_name_total{{{F}}}{RATE}))",
               "{{syscall}}", "ops", "The function's top syscall names (the agent's top K) and other.", 12,
               stacked=True),
            ts("Time in syscalls", f"sum by (function) (rate(fntax_syscall_seconds_total{{{F}}}{RATE}))",
               "{{function}}", "s", "Entry-to-exit time inside syscalls per second (includes time blocked).", 12),
            ts("Page faults by type", f"sum by (type) (rate(fntax_page_faults_total{{{F}}}{RATE}))",
               "{{type}}", "ops", "Minor and major faults per second (the kernel's minflt/majflt points).", 12),
            ts("Page-fault exceptions by mode",
               f"sum by (mode) (rate(fntax_page_fault_exceptions_total{{{F}}}{RATE}))",
               "{{mode}}", "ops", "Faults taken in user mode and in kernel mode (inside syscalls).", 12),
        )),
        ("Scheduling, interrupts, decompression", (
            ts("Context switches by type", f"sum by (type) (rate(fntax_context_switches_total{{{F}}}{RATE}))",
               "{{type}}", "ops", "Voluntary (slept) and involuntary (preempted) switches per second.", 8),
            ts("Run-queue wait", f"sum by (function) (rate(fntax_runqueue_wait_seconds_total{{{F}}}{RATE}))",
               "{{function}}", "s", "Time runnable but waiting for a CPU, per second.", 8),
            ts("Interrupt time by type", f"sum by (type) (rate(fntax_irq_seconds_total{{{F}}}{RATE}))",
               "{{type}}", "s", "Hard and soft interrupt time charged to the function, per second.", 8),
            ts("Decompression by library",
               f"sum by (library) (rate(fntax_decompression_seconds_total{{{F}}}{RATE}))",
               "{{library}}", "s", "On-CPU time inside decoders per second.", 12, stacked=True),
            ts("On-CPU time", f"sum by (function) (rate(fntax_oncpu_seconds_total{{{F}}}{RATE}))",
               "{{function}}", "s", "CPU seconds per second the function's processes ran.", 12),
        )),
    ),
)

VMS = DashboardSpec(
    uid="fntax-vms",
    title="fntax / VMs",
    description="Virtual machines (kind=vm: Firecracker, QEMU, cloud-hypervisor processes): exits and vCPU wait.",
    variables=("datasource", "instance", "vm"),
    rows=(
        ("Exits", (
            ts("VM exits by reason", f"sum by (function, reason) (rate(fntax_kvm_exits_total{{{VM}}}{RATE}))",
               "{{function}} {{reason}}", "ops", "KVM exits per second, by exit reason, per VM.", 12),
            ts("Time in VM exits", f"sum by (function) (rate(fntax_kvm_exit_seconds_total{{{VM}}}{RATE}))",
               "{{function}}", "s", "Exit to re-entry time per second, per VM.", 12),
            ts("Exits handled in the VMM by reason",
               f"sum by (function, reason) (rate(fntax_kvm_userspace_exits_total{{{VM}}}{RATE}))",
               "{{function}} {{reason}}", "ops", "Exits KVM hands to the VMM process (I/O, MMIO) per second.", 12),
            ts("Time in the VMM for exits",
               f"sum by (function) (rate(fntax_kvm_userspace_exit_seconds_total{{{VM}}}{RATE}))",
               "{{function}}", "s", "Time the VMM spends handling exits, per second.", 12),
        )),
        ("vCPUs and tax", (
            ts("vCPU wait", f"sum by (function) (rate(fntax_vcpu_wait_seconds_total{{{VM}}}{RATE}))",
               "{{function}}", "s", "Time a VM's vCPU threads were runnable but not running, per second.", 8),
            ts("Virtualization tax",
               f'sum by (function) (rate(fntax_tax_seconds_total{{{VM}, category="virtualization"}}{RATE}))',
               "{{function}}", "s", "The tax model's virtualization category, per VM.", 8),
            PanelSpec("VM CPU and run-queue wait", "timeseries",
                      (Query(f"sum by (function) (rate(fntax_oncpu_seconds_total{{{VM}}}{RATE}))",
                             "{{function}} on CPU"),
                       Query(f"sum by (function) (rate(fntax_runqueue_wait_seconds_total{{{VM}}}{RATE}))",
                             "{{function}} run-queue wait")),
                      "s", "The VM monitor process tree's CPU time and run-queue wait per second.", 8),
            PanelSpec("VMs by tax ratio", "table", _q(f"fntax:function_tax_ratio:rate5m{{{VM}}}"), "percentunit",
                      "Each VM's instruction-tax ratio now.", 24, 7),
        )),
    ),
)

AGENT = DashboardSpec(
    uid="fntax-agent-health",
    title="fntax / Agent health",
    description="The agent's own cost and state: probes, maps, losses, scrapes, CPU and memory.",
    variables=("datasource", "instance"),
    rows=(
        ("State", (
            PanelSpec("Agent up", "stat", _q(f"up{{{I}}}", "{{instance}}"), "short",
                      "1 when Prometheus's last scrape of the agent succeeded.", 6, 5),
            PanelSpec("Probes attached", "stat",
                      _q(f"count by (instance) (fntax_probe_attached{{{I}}} == 1)", "{{instance}}"), "short",
                      "Probes the agent reports attached.", 6, 5),
            PanelSpec("Collection errors", "stat",
                      _q(f"sum by (instance) (increase(fntax_collect_errors_total{{{I}}}[$__range]))", "{{instance}}"),
                      "short", "Scrapes whose collection failed in part, over the time range.", 6, 5),
            PanelSpec("Events lost", "stat",
                      _q(f"sum by (instance) (increase(fntax_events_lost_total{{{I}}}[$__range]))", "{{instance}}"),
                      "short", "Fork/exec/exit events dropped over the time range.", 6, 5),
        )),
        ("Probes", (
            ts("Probe mean run time", f"fntax_probe_mean_run_seconds{{{I}}}", "{{probe}}", "s",
               "Mean run time of each probe program (kernel BPF statistics, sampled 1 s in 30 s).", 12),
            ts("Probe run time per second", f"sum by (probe) (rate(fntax_probe_run_seconds_total{{{I}}}{RATE}))",
               "{{probe}}", "s", "BPF run time counted while statistics are sampled.", 12, stacked=True),
            PanelSpec("Attached probes", "table", _q(f"fntax_probe_attached{{{I}}}"), "short",
                      "Every probe and whether it is attached (1).", 24, 8),
        )),
        ("Maps", (
            ts("Map fill", f"fntax_map_entries{{{I}}} / fntax_map_capacity{{{I}}}", "{{map}}", "percentunit",
               "Entries over capacity for each bounded BPF map; at 100% updates fail.", 12),
            ts("Map update failures", f"sum by (map) (rate(fntax_map_update_failures_total{{{I}}}{RATE}))",
               "{{map}}", "ops", "Updates refused by a full map, per second.", 12),
            ts("Lost events", f"sum by (instance) (rate(fntax_events_lost_total{{{I}}}{RATE}))",
               "{{instance}}", "ops", "Process events dropped, per second.", 12),
        )),
        ("Cost of the agent", (
            PanelSpec("Scrape duration", "timeseries",
                      (Query(f"fntax_scrape_duration_seconds{{{I}}}", "agent's own {{instance}}"),
                       Query(f"scrape_duration_seconds{{{I}}}", "Prometheus's view {{instance}}")),
                      "s", "How long a scrape of the agent takes.", 8),
            ts("Agent CPU", f"rate(fntax_agent_cpu_seconds_total{{{I}}}{RATE})", "{{instance}}", "percentunit",
               "Share of one CPU the agent process uses.", 8),
            ts("Agent memory", f"fntax_agent_resident_memory_bytes{{{I}}}", "{{instance}}", "bytes",
               "The agent's resident memory.", 8),
        )),
    ),
)

FLEET = DashboardSpec(
    uid="fntax-fleet",
    title="fntax / Fleet",
    description="The same function's tax across hosts and kernels. Query a Prometheus that holds every host's series.",
    variables=("datasource", "instance", "function"),
    rows=(
        ("One function across hosts", (
            ts("Tax ratio per host", f"fntax:function_tax_ratio:rate5m{{{FLEET}}}", "{{instance}} {{function}}",
               "percentunit", "The function's instruction-tax ratio on each host.", 12),
            ts("Tax dollars per hour per host",
               f"sum by (instance, function) (fntax:function_tax_dollars_per_hour:rate5m{{{FLEET}}})",
               "{{instance}} {{function}}", "currencyUSD", "What the function's tax costs on each host.", 12),
            PanelSpec("Tax by category per host", "bargauge",
                      _q(f"sum by (instance, category) (increase(fntax_tax_seconds_total{{{FLEET}}}[$__range]))",
                         "{{instance}} {{category}}"), "s",
                      "Tax seconds over the time range, by category, per host: which part differs.", 12, 10),
            ts("Syscalls per second per host",
               f"sum by (instance, syscall) (rate(fntax_syscalls_by_name_total{{{FLEET}}}{RATE}))",
               "{{instance}} {{syscall}}", "ops", "The same function's syscall mix on each host.", 12),
        )),
        ("Kernels", (
            PanelSpec("Kernel per host", "table", _q(f"fntax_host_info{{{I}}}"), "short",
                      "Each agent's kernel and CPU model (info metric).", 12, 8),
            ts("Tax ratio by kernel", 'fntax:fleet_function_tax_ratio_by_kernel:rate5m{function=~"$function"}',
               "{{kernel}} {{function}}", "percentunit", "The function's tax ratio averaged per kernel version.", 12),
        )),
        ("Fleet", (
            ts("Fleet-wide tax ratio", 'fntax:fleet_function_tax_ratio:rate5m{function=~"$function"}',
               "{{function}}", "percentunit", "Tax over CPU demand summed over every host running the function.", 8),
            ts("Tax-ratio spread across hosts", 'fntax:fleet_function_tax_ratio_spread:rate5m{function=~"$function"}',
               "{{function}}", "percentunit", "Highest minus lowest per-host ratio: how much the host matters.", 8),
            PanelSpec("Agents reporting", "stat", _q("fntax:fleet_agents_up:sum", "{{job}}"), "short",
                      "Agents Prometheus scraped successfully.", 8, 8),
            PanelSpec("Fleet top functions by tax dollars per hour", "table",
                      _q("fntax:fleet_top_functions_by_tax_dollars_per_hour:rate5m"), "currencyUSD",
                      "The ten functions whose tax costs the most over the whole fleet.", 24, 9),
        )),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (HOST, FUNCTION, VMS, AGENT, FLEET)


def _variable(name: str) -> dashboard.DatasourceVariable | dashboard.QueryVariable:
    if name == "datasource":
        return dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
    queries = {
        "instance": ("Instance", "label_values(fntax_scrape_duration_seconds, instance)"),
        "function": ("Function", 'label_values(fntax_tax_dollars_total{instance=~"$instance"}, function)'),
        "kind": ("Kind", 'label_values(fntax_tax_dollars_total{instance=~"$instance", function=~"$function"}, kind)'),
        "vm": ("VM", 'label_values(fntax_tax_dollars_total{instance=~"$instance", kind="vm"}, function)'),
    }
    label, query = queries[name]
    variable = (dashboard.QueryVariable(name).label(label).datasource(DATASOURCE).query(query)
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                .include_all(True).all_value(".*"))
    # The fleet dashboard compares one function across hosts: one function at a time.
    return variable.multi(name != "function")


def _panel(spec: PanelSpec, panel_id: int) -> object:
    builder: object
    if spec.type == "timeseries":
        ts_builder = (timeseries.Panel().fill_opacity(20 if spec.stacked else 10).line_width(1)
                      .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST)
                              .placement(LegendPlacement.BOTTOM).show_legend(True)))
        if spec.stacked:
            ts_builder = ts_builder.stacking(StackingConfig().mode(StackingMode.NORMAL))
        builder = ts_builder
    elif spec.type == "stat":
        builder = stat.Panel()
    elif spec.type == "table":
        builder = table.Panel()
    elif spec.type == "bargauge":
        builder = bargauge.Panel()
    else:
        raise ValueError(f"{spec.title}: unknown panel type {spec.type}")
    builder.id(panel_id).title(spec.title).description(spec.description).datasource(DATASOURCE)  # type: ignore[attr-defined]
    builder.unit(spec.unit).height(spec.height).span(spec.width)  # type: ignore[attr-defined]
    for index, query in enumerate(spec.queries):
        target = prometheus.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index)).datasource(DATASOURCE)
        if spec.instant:
            target = target.instant().format(PromQueryFormat.TABLE if spec.type == "table"
                                             else PromQueryFormat.TIME_SERIES)
        else:
            target = target.range()
        if query.legend:
            target = target.legend_format(query.legend)
        builder.with_target(target)  # type: ignore[attr-defined]
    return builder


def build(spec: DashboardSpec) -> dict[str, object]:
    """The dashboard's JSON model (classic format) as plain data."""
    board = (dashboard.Dashboard(spec.title).uid(spec.uid).description(spec.description).tags(list(spec.tags))
             .refresh("30s").time("now-1h", "now").timezone("browser").editable())
    for name in spec.variables:
        board = board.with_variable(_variable(name))
    panel_id = 1
    for row_title, panels in spec.rows:
        board = board.with_row(dashboard.Row(row_title).id(panel_id))
        panel_id += 1
        for panel in panels:
            board = board.with_panel(_panel(panel, panel_id))  # type: ignore[arg-type]
            panel_id += 1
    model: dict[str, object] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return model


def render(spec: DashboardSpec) -> str:
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"


def path_of(spec: DashboardSpec) -> Path:
    return OUT_DIR / f"{spec.uid}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed dashboard differs")
    args = parser.parse_args(argv)
    stale = []
    for spec in DASHBOARDS:
        path, text = path_of(spec), render(spec)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    for path in stale:
        print(f"{path}: differs from what dashboards/generate.py produces", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
