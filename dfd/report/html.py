"""``report.html``: the whole report as one self-contained page beside report.md.

Every image is inlined as a ``data:`` URI and the only script is a few lines of plain inline JavaScript (click a
column header to sort), so the file opens from disk, offline, on any machine, and can be mailed or attached as
it is: no server, no network, no external URL anywhere. Matrix cells carry their value exactly as matrix.csv
writes it (``data-value``) and show the bootstrap interval and seed spread on hover (``title``).
"""

from __future__ import annotations

import base64
import html
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from dfd.report.figures import find_figures
from dfd.report.matrix import Matrix

#: matrix.csv's float format (dfd.report.matrix.write_csvs): cells carry the value as the CSV has it.
CSV_FLOAT = "%.10g"

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0;cursor:pointer}
td:first-child,th:first-child{text-align:left}td.in{font-weight:bold;background:#eef5ff}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;font-size:0.85em}
.card img{display:block;max-width:100%}figure{display:inline-block;margin:8px}figure img{max-width:640px}
.note{color:#666;font-size:0.9em}
"""

# Sort a table by the clicked column: numbers by data-value (blank cells last), else by text.
_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var asc = !th.classList.contains("sorted-asc");
    table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    var key = function (row) {
      var cell = row.cells[col], v = cell.getAttribute("data-value");
      var x = v === null || v === "" ? NaN : parseFloat(v);
      return isNaN(x) ? cell.textContent.trim() : x;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x === "number" && typeof y === "number") return asc ? x - y : y - x;
      if (typeof x === "number") return -1;
      if (typeof y === "number") return 1;
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    }).forEach(function (row) { body.appendChild(row); });
  });
});
"""


def data_uri(path: str | Path) -> str:
    """A PNG (or JPEG) file as a ``data:`` URI."""
    p = Path(path)
    mime = "image/jpeg" if p.suffix.lower() in (".jpg", ".jpeg") else "image/png"
    return f"data:{mime};base64,{base64.b64encode(p.read_bytes()).decode('ascii')}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    return "" if value is None or not np.isfinite(value) else CSV_FLOAT % value


def matrix_html(m: Matrix) -> str:
    """The matrix as a sortable table: ``mean ± std`` per cell, CI and seeds on hover, in-domain cells marked."""
    head = "".join(f"<th>{_e(c)}</th>" for c in ["training configuration", "seeds", *m.mean.columns])
    rows = []
    for config in m.mean.index:
        seeds = int(m.n_seeds[config])
        cells = [f'<td data-value="{_e(config)}">{_e(config)}</td>', f'<td data-value="{seeds}">{seeds}</td>']
        for t in m.mean.columns:
            mean, std = float(m.mean.at[config, t]), float(m.std.at[config, t])
            tip = [f"{m.metric} on {t}, {config}"]
            if m.ci_lo is not None and np.isfinite(m.ci_lo.at[config, t]):
                tip.append(f"95% bootstrap CI [{m.ci_lo.at[config, t]:.3f}, {m.ci_hi.at[config, t]:.3f}]")
            tip.append(f"± {std:.3f} over {seeds} seeds" if np.isfinite(std) else f"{seeds} seed(s)")
            text = "–" if not np.isfinite(mean) else f"{mean:.3f}" + (f" ± {std:.3f}" if np.isfinite(std) else "")
            cls = ' class="in"' if m.in_domain.at[config, t] else ""
            cells.append(f'<td{cls} data-value="{_num(mean)}" title="{_e("; ".join(tip))}">{_e(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<table class="sortable matrix" data-metric="{_e(m.metric)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def frame_html(df: pd.DataFrame, numeric: tuple[str, ...] = ()) -> str:
    """Any table as a sortable HTML table (``numeric`` columns sort as numbers)."""
    head = "".join(f"<th>{_e(c)}</th>" for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, row, strict=True):
            if c in numeric and isinstance(v, int | float | np.number):
                text = f"{float(v):.4f}" if np.isfinite(v) else "–"
                cells.append(f'<td data-value="{_num(float(v))}">{_e(text)}</td>')
            else:
                cells.append(f"<td>{_e(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def gallery_html(gallery: pd.DataFrame, out: Path) -> str:
    """The failure galleries: per configuration and test set, false positives then false negatives."""
    parts = []
    for (config, test_set), grp in gallery.groupby(["config", "test_set"], sort=False):
        parts.append(f"<h3>{_e(config)} on {_e(test_set)}</h3>")
        for kind, title in (("false_positive", "Worst false positives (real videos scored most fake)"),
                            ("false_negative", "Worst false negatives (fake videos scored most real)")):
            entries = grp[grp["kind"] == kind]
            if entries.empty:
                continue
            cards = []
            for r in entries.itertuples(index=False):
                images = "".join(f'<img alt="{_e(alt)} of {_e(r.video_id)}" src="{data_uri(out / p)}">'
                                 for p, alt in ((r.thumbnail, "crops"), (r.heatmap, "heatmaps")) if p)
                missing = "" if r.thumbnail else '<div class="note">crops not on this machine</div>'
                cards.append(f'<div class="card">{images}{missing}<div><b>#{r.rank}</b> <code>{_e(r.video_id)}</code>'
                             f"</div><div>{_e(r.method)} · P(fake) {r.prob_fake:.4f}"
                             f"{f' · {r.n_runs} runs' if r.n_runs > 1 else ''}</div></div>")
            parts.append(f"<h4>{_e(title)}</h4><div class=\"gallery\">{''.join(cards)}</div>")
    return "".join(parts)


def write_html(out: Path, m: Matrix, gap: pd.DataFrame, others: list[Matrix], title: str,
               gallery: pd.DataFrame | None = None, worst: pd.DataFrame | None = None, n_files: int = 0) -> Path:
    """Write ``report.html`` into ``out`` (after every figure is in place) and return its path."""
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="note">Generated {datetime.now().isoformat(timespec="seconds")} by dfd-report from '
            f"{n_files} result file(s). Click a column header to sort; hover a cell for its 95 % bootstrap interval "
            "and the spread over seeds. Bold cells: in-domain test set.</p>",
            f"<h2>Cross-dataset matrix ({_e(m.metric)})</h2>", matrix_html(m),
            "<h2>Generalization gap</h2>",
            frame_html(gap.reset_index().rename(columns={"index": "config"}),
                       numeric=tuple(c for c in gap.columns))]
    if gallery is not None and not gallery.empty:
        body += ["<h2>Failure galleries</h2>", '<p class="note">Per configuration and test set, the videos whose '
                 "score is furthest from their label (P(fake) averaged over the configuration's runs): crops from "
                 "the cache, and Grad-CAM heatmaps of the fake score where dfd-eval explain=N ran.</p>",
                 gallery_html(gallery, out)]
    if worst is not None and not worst.empty:
        body += ["<h2>Worst videos</h2>", frame_html(worst, numeric=("rank", "prob_fake", "error", "n_runs"))]
    for section, paths in find_figures(out).items():
        body.append(f"<h2>{_e(section)}</h2>")
        body += [f'<figure><img alt="{_e(p.stem)}" src="{data_uri(p)}"><figcaption>{_e(p.relative_to(out))}'
                 "</figcaption></figure>" for p in paths]
    if others:  # after the pictures: the page is for looking first
        body.append("<h2>Other metrics</h2>")
    for other in others:
        body += [f"<h3>{_e(other.metric)}</h3>", matrix_html(other)]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_STYLE}</style></head><body>{''.join(body)}<script>{_SCRIPT}</script></body></html>")
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
