"""HTML and SVG: the evaluation report, token-reward heatmaps and the comparison of methods.

Everything here turns numbers that eval.py and benchmarks/compare.py measured into a page a person
reads; nothing here measures. Pages are self-contained (inline CSS and SVG, no script, no network),
so they open from disk and can be attached to an issue.

- `svg_chart`: a line chart as inline SVG (round ticks, a legend, gaps where a value is missing);
- `heatmap_table` / `render_trace`: completions with every token coloured by its reward r_phi
  (or the discounted reward-to-go), standardised over the table, steps delimited, the known first
  wrong step and the PRM's lowest step marked;
- `report_html`: eval.py's report (scaling curves, AUCs, localisation, all-fail groups, training
  curves, heatmaps); `comparison_html`: compare.py's held-out accuracy and all-fail share against
  iteration for every method.
"""
import html
import json
import math
import os
import re
from dataclasses import dataclass

@dataclass
class Trace:
    prompt: str
    pieces: list[str]              # text of every completion token ('' for EOS)
    r: list[float]                 # r_phi of every completion token
    steps: list[int]               # step index of every completion token
    label: str                     # caption: where the trace comes from
    correct: bool                  # outcome reward r_o = 1
    first_wrong: int | None = None  # known first wrong step, if any



def reward_to_go(r: list[float], gamma: float) -> list[float]:
    """G_t = r_t + gamma G_{t+1}: the discounted reward-to-go within one completion."""
    out, g = [0.0] * len(r), 0.0
    for t in range(len(r) - 1, -1, -1):
        g = r[t] + gamma * g
        out[t] = g
    return out


def colour(z: float) -> str:
    """Diverging colour: red below the page mean, white at it, blue above; saturated at |z| = 2.5."""
    t = min(abs(z) / 2.5, 1.0)
    end = (215, 48, 39) if z < 0 else (49, 104, 176)
    return "rgb(" + ",".join(str(round(255 + (c - 255) * t)) for c in end) + ")"


ANSWER_MARK = re.compile(r"(Answer:|####|\\boxed\{)[^\n]*")


def render_trace(tr: Trace, mean: float, std: float, gamma: float) -> str:
    """One trace as HTML: token spans coloured by standardised (discounted) reward, inside step spans."""
    values = reward_to_go(tr.r, gamma) if gamma else tr.r
    text = "".join(tr.pieces)
    answers = list(ANSWER_MARK.finditer(text))
    ans = (answers[-1].start(), answers[-1].end()) if answers else (-1, -1)
    n_steps = max(tr.steps) + 1 if tr.steps else 0
    step_sum = [0.0] * n_steps
    for s, r in zip(tr.steps, tr.r):
        step_sum[s] += r
    low = step_sum.index(min(step_sum)) if step_sum else -1
    R = sum(tr.r)
    cap = [html.escape(tr.label), f"R<sub>&phi;</sub> = {R:.2f}", "correct &#10003;" if tr.correct else "wrong &#10007;"]
    if tr.first_wrong is not None:
        cap.append(f"first wrong: step {tr.first_wrong}")
    cap.append(f"PRM lowest: step {low}" + (" (hit)" if low == tr.first_wrong else ""))
    parts = [f'<div class="prompt">{html.escape(tr.prompt.strip())}</div>',
             f'<div class="cap">{" &middot; ".join(cap)}</div><div class="trace">']
    pos, current = 0, None
    for piece, s, v, r in zip(tr.pieces, tr.steps, values, tr.r):
        if s != current:
            if current is not None:
                parts.append("</span>")
            cls = "step" + (" fw" if s == tr.first_wrong else "") + (" low" if s == low else "")
            mark = "&#9660;" if s == low else ""
            parts.append(f'<span class="{cls}" title="step {s}: sum of r = {step_sum[s]:.3f}">'
                         f'<span class="sn">{s}{mark}</span>')
            current = s
        z = (v - mean) / std
        in_answer = piece and pos < ans[1] and pos + len(piece) > ans[0]
        shown = html.escape(piece).replace("\n", "&#8629;\n") if piece else '<span class="eos">&#8718;</span>'
        fg = "#fff" if abs(z) > 1.6 else "#111"
        parts.append(f'<span class="t{" ans" if in_answer else ""}" style="background:{colour(z)};color:{fg}" '
                     f'title="r = {r:.3f}, z = {z:.2f}">{shown}</span>')
        pos += len(piece)
    if current is not None:
        parts.append("</span>")
    parts.append("</div>")
    return "".join(parts)


def heatmap_table(pairs: list[tuple], headers: tuple, gamma: float) -> str:
    """Trace pairs side by side (None leaves a cell empty), colours standardised over the whole table."""
    values = [v for pair in pairs for t in pair if t is not None for v in (reward_to_go(t.r, gamma) if gamma else t.r)]
    mean = sum(values) / max(1, len(values))
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values))) or 1.0
    what = f"discounted reward-to-go (gamma = {gamma:g})" if gamma else "token reward r_phi"
    legend = "".join(f'<span class="t" style="background:{colour(z)}">{z:+.1f}</span>' for z in (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5))
    rows = [f'<p class="legend">colour: {what}, standardised over this table (mean {mean:.3g}, std {std:.3g}): {legend} '
            f'&nbsp; <span class="step"><span class="sn">2</span>step</span> ends at a bar &nbsp; '
            f'<span class="fw">first wrong step</span> &nbsp; <span class="sn">&#9660;</span> PRM lowest step &nbsp; '
            f'<span class="ans">answer</span> &nbsp; <span class="eos">&#8718;</span> EOS</p>',
            "<table class=\"pairs\"><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"]
    for pair in pairs:
        rows.append("<tr>" + "".join(f"<td>{render_trace(t, mean, std, gamma) if t else ''}</td>" for t in pair) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto; max-width: 1320px; color: #222; padding: 0 16px; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; }
table.num { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
table.num td, table.num th { border: 1px solid #ccc; padding: 3px 9px; text-align: right; }
table.num td:first-child, table.num th:first-child { text-align: left; }
table.pairs { border-collapse: collapse; width: 100%; table-layout: fixed; }
table.pairs th { text-align: left; font-size: 14px; padding: 4px 8px; }
table.pairs td { vertical-align: top; border-top: 1px solid #ddd; padding: 8px; }
.prompt { color: #555; font-size: 13px; font-family: ui-monospace, monospace; }
.cap { font-size: 12px; color: #333; margin: 2px 0 4px; }
.trace { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: 15px; line-height: 2.2; white-space: pre-wrap; word-break: break-all; }
.t { padding: 3px 0; }
.step { border-right: 2px solid #444; margin-right: 3px; padding-right: 1px; }
.sn { font-size: 10px; color: #666; vertical-align: super; margin-right: 1px; font-family: system-ui, sans-serif; }
.low > .sn { color: #6a1b9a; font-weight: bold; }
.fw { outline: 2px dashed #b00020; outline-offset: 2px; }
.ans { text-decoration: underline; text-decoration-thickness: 2px; font-weight: bold; }
.eos { font-size: 11px; color: #555; }
.legend { font-size: 13px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; }
.note { font-size: 13px; color: #444; max-width: 1000px; }
"""


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]


def nice_ticks(lo: float, hi: float, n: int = 5):
    """Round tick values covering [lo, hi], and the axis range they span."""
    if hi - lo < 1e-12:
        lo, hi = lo - max(0.5, abs(lo) * 0.1), hi + max(0.5, abs(hi) * 0.1)
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if (hi - lo) / (step * m) <= n)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [round(i * step, 12) for i in range(first, last + 1)]
    return ticks, (ticks[0], ticks[-1])


def svg_chart(series: list[dict], title: str, xlabel: str = "", ylabel: str = "", xticks=None,
              width: int = 400, height: int = 240) -> str:
    """A line chart as inline SVG. series: dicts with name, x, y; optional color, dash, opacity, width, markers.

    Non-finite or None y values break a line. xticks: (position, label) pairs, else round ticks.
    """
    finite = lambda v: v is not None and math.isfinite(v)
    pts = [(x, y) for s in series for x, y in zip(s["x"], s["y"]) if finite(x) and finite(y)]
    if not pts:
        return ""
    named = [s for s in series if s.get("name")]
    legend_w = max(170, round(6.3 * max(len(s["name"]) for s in named)) + 44) if len(named) > 1 else 0
    L, R, T, B = 54, 10 + legend_w, 26, 40
    pw, ph = width - L - R, height - T - B
    yt, (y0, y1) = nice_ticks(min(p[1] for p in pts), max(p[1] for p in pts))
    if xticks is None:
        xt, (x0, x1) = nice_ticks(min(p[0] for p in pts), max(p[0] for p in pts))
        xticks = [(v, f"{v:g}") for v in xt]
    else:
        x0, x1 = min(v for v, _ in xticks), max(v for v, _ in xticks)
        x0, x1 = (x0 - 0.5, x1 + 0.5) if x1 == x0 else (x0, x1)
    px = lambda x: L + (x - x0) / (x1 - x0) * pw
    py = lambda y: T + (1 - (y - y0) / (y1 - y0)) * ph
    e = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
           f'font-family="system-ui, sans-serif" font-size="11">',
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{L}" y="16" font-size="13" font-weight="bold">{e(title)}</text>']
    for v in yt:
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{L - 5}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v, label in xticks:
        out.append(f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{T + ph}" y2="{T + ph + 4}" stroke="#444"/>'
                   f'<text x="{px(v):.1f}" y="{T + ph + 16}" text-anchor="middle">{e(label)}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{L + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">{e(xlabel)}</text>')
    out.append(f'<text transform="translate(12,{T + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{e(ylabel)}</text>')
    colours = [s.get("color", PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]
    for s, c in zip(series, colours):
        style = (f'fill="none" stroke="{c}" stroke-width="{s.get("width", 1.8)}" stroke-opacity="{s.get("opacity", 1)}"'
                 + (' stroke-dasharray="5,3"' if s.get("dash") else ""))
        segment = []
        for x, y in list(zip(s["x"], s["y"])) + [(None, None)]:
            if finite(x) and finite(y):
                segment.append(f"{px(x):.1f},{py(y):.1f}")
                continue
            if len(segment) > 1:
                out.append(f'<polyline points="{" ".join(segment)}" {style}/>')
            if len(segment) == 1 or (segment and s.get("markers")):
                for p in segment:
                    cx, cy = p.split(",")
                    out.append(f'<circle cx="{cx}" cy="{cy}" r="2.5" fill="{c}"/>')
            segment = []
    if legend_w:
        for i, (s, c) in enumerate((s, c) for s, c in zip(series, colours) if s.get("name")):
            y = T + 8 + 16 * i
            out.append(f'<line x1="{L + pw + 10}" x2="{L + pw + 30}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2"'
                       + (' stroke-dasharray="5,3"' if s.get("dash") else "") + "/>"
                       f'<text x="{L + pw + 34}" y="{y + 4}">{e(s["name"])}</text>')
    out.append("</svg>")
    return "".join(out)


def running_mean(ys: list, w: int) -> list:
    """Mean of the last `w` values at every position (None values skipped; 0 where a window has none)."""
    out = []
    for j in range(len(ys)):
        window = [v for v in ys[max(0, j - w + 1):j + 1] if v is not None]
        out.append(sum(window) / max(1, len(window)))
    return out


CURVES = [("rollout/accuracy", ("rollout/accuracy",)), ("R_phi: expert vs policy", ("irl/R_expert", "irl/R_policy")),
          ("irl/ess", ("irl/ess",)), ("irl/loss", ("irl/loss",)), ("policy/entropy", ("policy/entropy",)),
          ("policy/zero_adv_groups", ("policy/zero_adv_groups",)), ("rollout/length", ("rollout/length",)),
          ("policy/clip_frac", ("policy/clip_frac",))]


def training_curves(metrics_path: str) -> str:
    """Inline-SVG charts of a run's metrics.jsonl against iteration (raw, and a running mean when long)."""
    if not os.path.exists(metrics_path):
        return ""
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    rows = [row for row in rows if "iteration" in row]
    xs = [row["iteration"] for row in rows]
    charts = []
    for title, keys in CURVES:
        series = []
        for i, key in enumerate(k for k in keys if any(k in row for row in rows)):
            ys = [row.get(key) for row in rows]
            c = PALETTE[i]
            w = max(1, len(ys) // 15)
            if w > 1:
                series.append({"name": "", "x": xs, "y": ys, "color": c, "opacity": 0.3, "width": 1})
                series.append({"name": f"{key} (mean of {w})", "x": xs, "y": running_mean(ys, w), "color": c})
            else:
                series.append({"name": key, "x": xs, "y": ys, "color": c, "markers": True})
        if series:
            charts.append(svg_chart(series, title, "iteration", width=420 if len(keys) == 1 else 560, height=230))
    return '<div class="charts">' + "".join(charts) + "</div>" if charts else ""


def table(header: list, rows: list[list]) -> str:
    """A small HTML table of numbers (floats to 3 decimals)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else html.escape(str(v))
    return ('<table class="num"><tr>' + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows) + "</table>")


def report_html(res: dict, heatmaps: dict, metrics_path: str) -> str:
    """The report page: setup, scaling curves, pass@k, AUCs, localisation, all-fail groups, TTT, training, heatmaps."""
    e, b = html.escape, []
    b.append(f'<p class="note">policy <code>{e(res["policy"])}</code>; PRM <code>{e(str(res["prm"]))}</code>; '
             f'task <code>{e(res["task"])}</code>; {res["prompts"]} held-out prompts; {res["n_samples"]} samples per prompt '
             f'at temperature {res["temperature"]:g}; {res["subsets"]} random subsets per smaller N.</p>')
    b.append(table(["greedy pass@1"] + [f"pass@{k}" for k in res["pass@k"]],
                   [[res["greedy_pass@1"]] + list(res["pass@k"].values())]))
    if "scaling" in res:
        sc = res["scaling"]
        Ns = sc["N"]
        series = [{"name": name, "x": [math.log2(n) for n in Ns], "y": ys, "markers": True,
                   "dash": name.startswith(("oracle", "random"))} for name, ys in sc.items() if name != "N"]
        b.append('<h2 id="scaling">Test-time scaling: accuracy of the selected sample against N</h2>')
        b.append('<p class="note">Each selector picks one of N samples; accuracy is that sample\'s outcome. '
                 'Weighted vote: answer groups weighted by sum of exp(R<sub>&phi;</sub>); oracle: pass@N; random: pass@1.</p>')
        b.append(svg_chart(series, "accuracy vs number of samples N", "N (log scale)", "accuracy",
                           xticks=[(math.log2(n), str(n)) for n in Ns], width=760, height=330))
        b.append(table(["selector"] + [f"N={n}" for n in Ns], [[name] + ys for name, ys in sc.items() if name != "N"]))
    if "auc" in res:
        b.append('<h2 id="auc">PRM quality: AUC, correct vs incorrect</h2>')
        b.append('<p class="note">Trajectory: scores of the sampled rollouts, correct vs wrong outcome. Step: correct steps '
                 '(before the first wrong one) vs first wrong steps; 0.5 is no signal.</p>')
        b.append(table(["scores", "AUC", "n"], [[f"trajectory ({k})", v, res["auc"]["n_rollouts"]]
                                               for k, v in res["auc"]["trajectory"].items()]
                       + [[f"step ({k})", v["auc"], v["steps"]] for k, v in res["auc"]["step"].items()]))
    if res.get("localisation"):
        b.append('<h2 id="localisation">Error localisation: is the lowest-scoring step the first wrong one?</h2>')
        b.append('<p class="note">chance: a uniformly random step; best fixed step: always naming the most frequent '
                 'first-wrong position of the set (a PRM that only learned where errors usually sit gets this much).</p>')
        b.append(table(["trace set", "accuracy", "chance (1/#steps)", "best fixed step", "traces",
                        "first wrong at step 0, 1, ..", "PRM lowest at step 0, 1, .."],
                       [[k, v["accuracy"], v["chance"], v["best_fixed_step"], v["n"], " ".join(map(str, v.get("first_wrong_hist", []))),
                         " ".join(map(str, v.get("lowest_hist", [])))] for k, v in res["localisation"].items()]))
    if "all_fail" in res:
        b.append('<h2 id="all-fail">All-fail groups: zero outcome advantage, but the PRM still ranks</h2>')
        b.append('<p class="note">Groups of k consecutive samples per prompt. Concordance: over pairs of failures with a '
                 'different number of correct steps before the first wrong one, how often R<sub>&phi;</sub> ranks the '
                 'further-advanced one higher (0.5: no signal).</p>')
        b.append(table(["statistic", "value"], [[k, v] for k, v in res["all_fail"].items()]))
    b.append('<h2 id="ttt">Test-time training</h2>')
    if res.get("ttt"):
        b.append(table(["statistic", "value"], [[k, v] for k, v in res["ttt"].items()]))
    else:
        b.append('<p class="note">not measured: pass --ttt-after with a policy trained PRM-only on the held-out prompts.</p>')
    curves = training_curves(metrics_path)
    if curves:
        b.append(f'<h2 id="training">Training curves ({e(metrics_path)})</h2>{curves}')
    for name, (pairs, headers) in heatmaps.items():
        b.append(f'<h2 id="heatmap-{e(name)}">Token rewards: {e(name)} (first 4 pairs; all: <a href="heatmap-{e(name)}.html">raw</a>, '
                 f'<a href="heatmap-{e(name)}-discounted.html">discounted</a>)</h2>')
        b.append(heatmap_table(pairs[:4], headers, 0.0))
    return page("rePIRL evaluation report", "\n".join(b))


COMPARED = [("eval/accuracy", "held-out greedy accuracy", 1), ("rollout/accuracy", "rollout accuracy (mean of 10)", 10),
            ("policy/all_fail_groups", "groups whose k rollouts all fail (mean of 10)", 10)]


def markdown_table(text: str) -> str:
    """A markdown table (header, rule, rows; other lines kept as notes under it) as an HTML table."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    notes = [line for line in text.splitlines() if line.strip() and not line.startswith("|")]
    return table(rows[0], rows[1:]) + "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)


def comparison_html(runs: dict, table_md: str) -> str:
    """compare.py's page: for every metric of COMPARED, one chart with a line per method (the mean over its
    seeds, each seed faint behind it), then the table. runs: method name -> one list of metrics.jsonl
    records per seed (the iteration-0 record holds the warm start's held-out accuracy)."""
    charts = []
    for key, title, w in COMPARED:
        series = []
        for i, (name, seeds) in enumerate(runs.items()):
            per_seed = []
            for records in seeds:
                pts = [(r["iteration"], r[key]) for r in records if key in r]
                if pts:
                    per_seed.append(dict(zip([x for x, _ in pts], running_mean([y for _, y in pts], w))))
            if not per_seed:
                continue
            c = PALETTE[i % len(PALETTE)]
            for s in per_seed:
                series.append({"name": "", "x": list(s), "y": list(s.values()), "color": c, "opacity": 0.25, "width": 1})
            xs = sorted(set.intersection(*(set(s) for s in per_seed)))
            series.append({"name": f"{name} ({len(per_seed)} seeds)", "x": xs, "color": c, "width": 2.4,
                           "y": [sum(s[x] for s in per_seed) / len(per_seed) for x in xs], "markers": w == 1})
        if series:
            charts.append(svg_chart(series, title, "iteration", width=900, height=330))
    body = ('<p class="note">Each line is a method\'s mean over seeds; the faint lines behind it are its seeds. '
            'Held-out accuracy is greedy decoding on the held-out prompts (iteration 0: the warm start); rollout '
            'accuracy and the all-fail share are read from the training batches.</p>'
            f'<div class="charts">{"".join(charts)}</div><h2>Table</h2>{markdown_table(table_md)}')
    return page("Methods compared", body)
