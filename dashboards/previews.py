"""Run every dashboard panel's queries against a Prometheus and draw the results (matplotlib).

These are previews of the queries, laid out on the dashboards' grid: they are
not Grafana screenshots (no Grafana can run where fntax is tested).

    python -m dashboards.previews http://127.0.0.1:9090 dashboards/previews [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from dashboards.generate import DASHBOARDS, DashboardSpec, PanelSpec, Query
from dashboards.metrics import PENDING_METRICS, pending_in

ALL = ".*"


def substitute(expr: str, variables: Mapping[str, str], rate_interval: str, range_: str) -> str:
    """A panel query as Grafana sends it: each $variable expanded (a regex for multi/All values)."""
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", range_)
    return re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), ALL), expr)


@dataclass
class QueryResult:
    query: Query
    promql: str
    series: list[dict[str, Any]]  # Prometheus API result: metric + values (range) or value (instant)
    pending: frozenset[str] = frozenset()

    @property
    def has_data(self) -> bool:
        return bool(self.series)


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    if not fmt:
        return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__") + "}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def api(self, path: str, **params: str) -> Any:
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?" + urllib.parse.urlencode(params), timeout=30) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def run(self, panel: PanelSpec, query: Query, start: float, end: float, step: float,
            variables: Mapping[str, str], rate_interval: str) -> QueryResult:
        range_ = f"{max(60, math.ceil(end - start))}s"
        promql = substitute(query.expr, variables, rate_interval, range_)
        pending = frozenset(pending_in(query.expr))
        if panel.instant:
            data = self.api("query", query=promql, time=f"{end:.3f}")
        else:
            data = self.api("query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return QueryResult(query, promql, list(data["result"]), pending)


def run_dashboard(prom: Prometheus, spec: DashboardSpec, start: float, end: float, step: float = 1.0,
                  variables: Mapping[str, str] | None = None,
                  rate_interval: str = "10s") -> dict[str, list[QueryResult]]:
    """Panel title -> the results of its queries."""
    return {panel.title: [prom.run(panel, q, start, end, step, variables or {}, rate_interval)
                          for q in panel.queries] for panel in spec.panels}


def _layout(spec: DashboardSpec) -> list[tuple[str, PanelSpec | None, int, int, int, int]]:
    """(title, panel or None for a row header, x, y, w, h) on Grafana's 24-column grid, as the SDK packs it."""
    out: list[tuple[str, PanelSpec | None, int, int, int, int]] = []
    y = 0
    for row_title, panels in spec.rows:
        out.append((row_title, None, 0, y, 24, 1))
        y += 1
        x, row_h = 0, 0
        for panel in panels:
            if x + panel.width > 24:
                x, y, row_h = 0, y + row_h, 0
            out.append((panel.title, panel, x, y, panel.width, panel.height))
            x += panel.width
            row_h = max(row_h, panel.height)
        y += row_h
    return out


def _scale(unit: str, value: float) -> str:
    if unit == "percentunit":
        return f"{value:.1%}"
    if unit == "currencyUSD":
        return f"${value:.3g}"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    if unit == "s":
        return f"{value:.3g} s"
    return f"{value:.4g}"


def _draw(ax: Any, panel: PanelSpec, results: list[QueryResult], t0: float) -> None:
    import matplotlib.pyplot as plt

    ax.set_title(panel.title + f"  [{panel.type}]", fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    if all(not r.has_data for r in results):
        pending = sorted(set().union(*(r.pending for r in results)))
        text = ("pending: the agent does not export\n" + "\n".join(pending)) if pending else "no data"
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, color="0.4", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    if panel.type == "timeseries":
        lines = []
        for result in results:
            for series in result.series:
                points = [(float(t) - t0, float(v)) for t, v in series["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if points:
                    lines.append((legend(result.query.legend, series["metric"]), points))
        lines.sort(key=lambda item: item[0])
        lines = lines[:12]
        if panel.stacked and lines:
            grid = sorted({t for _l, pts in lines for t, _v in pts})
            stacks = [[dict(pts).get(t, 0.0) for t in grid] for _l, pts in lines]
            ax.stackplot(grid, stacks, labels=[label for label, _p in lines], alpha=0.7)
        else:
            for label, points in lines:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1)
        ax.set_xlabel("seconds", fontsize=6)
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _p: _scale(panel.unit, v)))
        ax.legend(fontsize=5, loc="upper left", ncol=2, frameon=False)
        return
    rows = [(legend(r.query.legend, s["metric"]), float(s["value"][1])) for r in results for s in r.series]
    rows.sort(key=lambda item: -item[1] if not math.isnan(item[1]) else 0)
    rows = rows[:10]
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.type == "stat":
        text = "\n".join(f"{_scale(panel.unit, v)}  {label}" for label, v in rows[:4])
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10 if len(rows) == 1 else 7,
                transform=ax.transAxes)
    elif panel.type == "bargauge":
        ax.barh(range(len(rows)), [v for _l, v in rows], color="tab:green")
        ax.set_yticks(range(len(rows)), [label for label, _v in rows], fontsize=5)
        ax.invert_yaxis()
        ax.tick_params(axis="x", labelsize=6)
    else:  # table
        cells = [[label[:70], _scale(panel.unit, v)] for label, v in rows]
        table = ax.table(cellText=cells, colLabels=["series", "value"], loc="upper center", cellLoc="left",
                         colWidths=[0.8, 0.2])
        table.auto_set_font_size(False)
        table.set_fontsize(6)
        ax.axis("off")


def render(spec: DashboardSpec, results: Mapping[str, list[QueryResult]], path: Path, t0: float,
           note: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layout = _layout(spec)
    height_units = max(y + h for _t, _p, _x, y, _w, h in layout)
    fig = plt.figure(figsize=(16, height_units * 0.42 + 1.2))
    grid = fig.add_gridspec(height_units, 24, hspace=1.6, wspace=1.2)
    fig.suptitle(f"{spec.title} — preview of the panel queries against a real Prometheus, "
                 f"drawn with matplotlib (not a Grafana screenshot){note}", fontsize=10)
    for title, panel, x, y, w, h in layout:
        if panel is None:
            ax = fig.add_subplot(grid[y, :])
            ax.axis("off")
            ax.text(0, 0.5, title, fontsize=9, fontweight="bold", va="center", transform=ax.transAxes)
            continue
        ax = fig.add_subplot(grid[y + 1:y + h, x:x + w] if h > 2 else grid[y:y + h, x:x + w])
        _draw(ax, panel, results[title], t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def render_all(prom_url: str, out_dir: Path, start: float, end: float,
               variables: Mapping[str, Mapping[str, str]] | None = None, rate_interval: str = "10s",
               note: str = "") -> dict[str, dict[str, list[QueryResult]]]:
    """Run and draw every dashboard; returns dashboard uid -> panel title -> results."""
    prom = Prometheus(prom_url)
    everything = {}
    for spec in DASHBOARDS:
        results = run_dashboard(prom, spec, start, end, 1.0, (variables or {}).get(spec.uid, {}), rate_interval)
        render(spec, results, out_dir / f"{spec.uid}.png", start, note)
        everything[spec.uid] = results
    return everything


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prometheus")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate-interval", default="1m")
    args = parser.parse_args(argv)
    end = time.time()
    render_all(args.prometheus, args.out_dir, end - args.minutes * 60, end, rate_interval=args.rate_interval)
    print(f"previews in {args.out_dir}; pending metrics: {', '.join(sorted(PENDING_METRICS))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
