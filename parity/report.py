"""The parity report as files: report.json (everything), report.md, and report.html, one
self-contained page (the per-layer error plot embedded as a PNG data URI, styles inline, no
scripts), so it opens from disk or a CI artifact without a server."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from parity import names


def write(report: dict, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (directory / "report.md").write_text(markdown(report), encoding="utf-8")
    (directory / "report.html").write_text(render(report), encoding="utf-8")




def score_line(b: dict) -> str:
    """'bleu 30.72 / 30.72, chrf 49.1 / 49.1': each ranked score, port / original."""
    return ", ".join(f"{k} {b['port'][k]} / {b['original'][k]}" for k in b["ranked"])


def _outcome_cell(g: dict) -> str:
    o = g.get("outcome")
    if o is None:
        return "no references"
    p = o.get("note") or f"p = {o['p_value']:.3f}"
    return f"{o['port']} / {o['original']} ({p}" + (", significantly worse)" if o["significantly_worse"] else ")")


def cause_rows(report: dict) -> list[list[str]]:
    """The table at the top of every report: per setting, its verdict, identical out of the total, the
    count of each cause of the differences (parity/causes.py), and the metric (BLEU, or ROUGE-L) port /
    original with the paired test's p-value."""
    from parity.causes import CAUSES

    metric = next((g["outcome"]["metric"] for g in report["generation"].values() if g.get("outcome")), "BLEU")
    rows = [["setting", "verdict", "identical", *CAUSES, f"{metric} port / original"]]
    for name, g in report["generation"].items():
        if "error" in g:
            rows.append([name, "FAIL", g["error"], *[""] * len(CAUSES), ""])
        else:
            rows.append([name, "PASS" if g["ok"] else "FAIL", f"{g['identical']}/{g['total']}",
                         *[str(g["causes"][c]) for c in CAUSES], _outcome_cell(g)])
    return rows


def mismatch_text(m: dict) -> list[str]:
    """One differing line, as plain sentences: where the two part and why (both report formats)."""
    cause = m["cause"]
    why = f"cause: {cause['cause']}" + (f" ({cause['rule']})" if "rule" in cause else "") + f": {cause['why']}"
    if m["first_differing_step"] is None:                     # the same tokens, other texts
        return [f"source: {m['source']}", f"port: {m['port']}", f"original: {m['original']}",
                "the same tokens, another text", why]
    a = m["at_that_step"]
    return [f"source: {m['source']}", f"port: {m['port']} ({m['port_score']:.4f})",
            f"original: {m['original']} ({m['original_score']:.4f})",
            f"they part at step {m['first_differing_step']}: the port chose "
            f"{_pick(a['port_token'], a['port_token_logprob'])}, the original "
            f"{_pick(a['original_token'], a['original_token_logprob'])}",
            why]


def _pick(token: str, logprob: float | None) -> str:
    """A token and its log-prob; a hypothesis that had ended there has neither (None)."""
    return f"{token!r}" if logprob is None else f"{token!r} ({logprob:.4f})"


def _by_depth(names: list[str]):
    """A figure with one slot per layer boundary (both plots' frame)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(names)), 3.6), dpi=100)
    return plt, fig, ax


def _png(plt, fig, ax, names: list[str], ylabel: str, title: str) -> bytes:
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def error_plot_png(tensors: list[dict], atol: float, mode: str) -> bytes:
    names = [t["name"] for t in tensors]
    plt, fig, ax = _by_depth(names)
    errors = [max(t["max_abs"], 1e-12) for t in tensors]   # log scale: exact zeros drawn at 1e-12
    colors = ["#2e7d32" if t["ok"] else "#c62828" for t in tensors]
    ax.bar(range(len(names)), errors, color=colors)
    for i, t in enumerate(tensors):
        if t["max_abs"] == 0:
            ax.annotate("0", (i, 1e-12), ha="center", va="bottom", fontsize=8)   # bitwise equal
    ax.axhline(atol, color="#555", linestyle="--", linewidth=1, label=f"atol {atol:g}")
    ax.set_yscale("log")
    return _png(plt, fig, ax, names, "max |port - original|", f"teacher-forced error per layer ({mode})")


def sqnr_plot_png(t: dict) -> bytes:
    """An approximate port's error by depth: SQNR per boundary, one line per mode (the accumulated
    error, and each layer's own in shadow mode where measured), the budget's bound dashed."""
    names = [d["name"] for d in t["tensors"]]
    plt, fig, ax = _by_depth(names)
    for key, label, style in (("tensors", "accumulated", "-"), ("own", "own (shadow mode)", ":")):
        if t.get(key):
            # a bitwise-equal tensor has infinite SQNR: drawn at the top of the axis
            ax.plot(range(len(names)), [min(d["sqnr_db"], 120.0) for d in t[key]], style, marker="o", label=label)
    ax.axhline(t["min_sqnr_db"], color="#c62828", linestyle="--", linewidth=1, label=f"budget {t['min_sqnr_db']:g} dB")
    return _png(plt, fig, ax, names, "SQNR (dB), higher is closer",
                "teacher-forced error by depth (worst sentence per boundary)")


def approximation_lines(a: dict) -> list[str]:
    """An approximate port's budget and where it stands (both report formats)."""
    b, d = a["budget"], a["log_probs"]
    out = [f"type {a['type']}: held to its budget, not to identity: every tensor at least {b['min_sqnr_db']:g} dB SQNR, "
           f"per-token |Δ log-prob| max ≤ {b['token_max']:g} and p99 ≤ {b['token_p99']:g} ({b['evidence']})"]
    if d:
        left = f", {d['left_out']} left out: tokenized otherwise" if d["left_out"] else ""
        out.append(f"teacher-forced on the original's best hypotheses ({d['setting']}, {d['lines']} lines, {d['tokens']} "
                   f"tokens{left}): per-token |Δ log-prob| max {d['max']:.3g}, p99 {d['p99']:.3g}, mean {d['mean']:.3g}")
    out += [f"beyond the budget: {p}" for p in a["problems"]] or ["within the budget"]
    return out


def render(report: dict) -> str:
    e = html.escape
    verdict = "PASS" if report["ok"] else "FAIL"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Parity {verdict}: {e(report['port'])}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}.bad{color:#c62828}.good{color:#2e7d32}</style>",
             f"</head><body><h1 class='{'good' if report['ok'] else 'bad'}'>Parity {verdict}</h1>",
             f"<p>port <code>{e(report['port'])}</code> against <code>{e(report['original'])}</code></p>"]
    if report["conditions"].get("note"):
        parts.append(f"<p class='bad' id='conditions'>note: {e(report['conditions']['note'])}</p>")
    if not report["decoder"]["ok"]:
        parts.append(f"<p class='bad' id='decoder'>decoder: {e(report['decoder']['problem'])}</p>")
    if a := report.get("approximation"):
        parts.append(f"<h2>Approximation</h2><p id='approximation' class='{'good' if a['ok'] else 'bad'}'>"
                     + "<br>".join(e(x) for x in approximation_lines(a)) + "</p>")
    head, *rows = cause_rows(report)
    parts.append("<h2>Differences and their causes</h2><table id='causes'><tr>"
                 + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
    parts += [f"<tr class='{'good' if row[1] == 'PASS' else 'bad'}'>" + "".join(f"<td>{e(c)}</td>" for c in row)
              + "</tr>" for row in rows]
    parts.append("</table>")
    t = report["tensors"]
    if "tensors" in t:
        plot = sqnr_plot_png(t) if "min_sqnr_db" in t else error_plot_png(t["tensors"], t["atol"], t["mode"])
        png = base64.b64encode(plot).decode()
        parts += [f"<h2>Tensors</h2><p>mode {e(t['mode'])}; first divergence: "
                  f"<b id='first-divergence'>{e(t['first_divergence'] or 'none')}</b>"
                  f" (atol {t['atol']:g}, rtol {t['rtol']:g}); first tensor that differs at all: "
                  f"<b id='first-inexact'>{e(t['first_inexact'] or 'none (bitwise equal)')}</b></p>",
                  f"<img alt='per-layer error plot' src='data:image/png;base64,{png}'>",
                  "<table><tr><th>tensor</th><th>shape</th><th>max abs</th><th>mean abs</th><th>max rel</th>"
                  "<th>NMSE</th><th>SQNR dB</th><th>own SQNR dB (shadow)</th><th>atol needed</th><th>ok</th></tr>"]
        own = [f"{d['sqnr_db']:.1f}" for d in t["own"]] if t.get("own") else [""] * len(t["tensors"])
        parts += [f"<tr class='{'good' if d['ok'] else 'bad'}'><td>{e(d['name'])}</td><td>{d['shape']}</td>"
                  f"<td>{d['max_abs']:.3g}</td><td>{d['mean_abs']:.3g}</td><td>{d['max_rel']:.3g}</td>"
                  f"<td>{d['nmse']:.3g}</td><td>{d['sqnr_db']:.1f}</td><td>{o}</td><td>{d['atol_needed']:.3g}</td>"
                  f"<td>{'✓' if d['ok'] else '✗'}</td></tr>" for d, o in zip(t["tensors"], own)]
        parts.append("</table>")
        parts += [f"<p class='bad'>{e(p)}</p>" for p in t["problems"]]
        parts.append("<h3>Where each tensor is taken</h3><table><tr><th>name</th><th>fairseq module</th>"
                     "<th>taken from</th><th>meaning</th></tr>")
        parts += [f"<tr><td>{e(b['name'])}</td><td><code>{e(b['fairseq_module'] or 'model')}</code></td>"
                  f"<td>{e(b['taken_from'])}</td><td>{e(b['meaning'])}</td></tr>" for b in t["correspondence"]]
        parts.append("</table>")
    tok = report["tokenization"]
    parts.append(f"<h2>Tokenization</h2><p>{tok['lines']} lines" + (f"; {e(tok['skipped'])}</p>" if "skipped" in tok else
                 "</p><table id='tokenization'><tr><th>stage</th><th>lines that differ</th></tr>"
                 + "".join(f"<tr class='{'good' if n == 0 else 'bad'}'><td>{e(stage)}</td><td>{n}</td></tr>"
                           for stage, n in tok["counts"].items()) + "</table>"))
    parts.append("<h2>Generation</h2><table><tr><th>setting</th><th>identical</th><th>max score diff</th></tr>")
    for name, g in report["generation"].items():
        cells = (f"<td colspan=2>{e(g['error'])}</td>" if "error" in g else
                 f"<td>{g['identical']}/{g['lines']}</td><td>{g['max_score_diff']:.3g}</td>")
        parts.append(f"<tr class='{'good' if g.get('ok') else 'bad'}'><td>{e(name)}</td>{cells}</tr>")
    parts.append("</table>")
    for name, g in report["generation"].items():
        for m in g.get("mismatches", [])[:10]:
            parts.append(f"<div class='mismatch'><h3>{e(name)}, line {m['line']}</h3><p>"
                         + "<br>".join(e(x) for x in mismatch_text(m)) + "</p></div>")
    if report.get("scores"):
        b = report["scores"]
        parts.append(f"<h2>{e(b['metric'])}</h2><p>{e(b['setting'])}: {e(score_line(b))}; paired bootstrap p = "
                     f"{b['paired_bootstrap'].get('note') or b['paired_bootstrap']['p_value']}"
                     f"<br><code>{e(b['port'][b['signature']])}</code></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def markdown(report: dict) -> str:
    c = report["conditions"]
    lines = [f"# Parity report: {report['port']} vs {report['original']}", "",
             f"**{'PASS' if report['ok'] else 'FAIL'}**", "",
             f"conditions: {c['threads']} thread(s), {c['cpu_capability']} (recorded: {c['recorded_threads']} thread(s), "
             f"{c['recorded_cpu_capability']})" + (f"; **{c['note']}**" if c.get("note") else ""), ""]
    if not report["decoder"]["ok"]:
        lines += [f"**decoder: {report['decoder']['problem']}**", ""]
    if a := report.get("approximation"):
        lines += ["## Approximation", "", *(f"- {x}" for x in approximation_lines(a)), ""]
    head, *rows = cause_rows(report)
    lines += ["## Differences and their causes", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows] + [""]
    t = report["tensors"]
    if "tensors" in t:
        bound = f"SQNR ≥ {t['min_sqnr_db']:g} dB" if "min_sqnr_db" in t else f"atol {t['atol']}, rtol {t['rtol']}"
        own = [f"{d['sqnr_db']:.1f}" for d in t["own"]] if t.get("own") else [""] * len(t["tensors"])
        lines += ["## Tensors (teacher-forced, worst sentence)", "",
                  f"mode {t['mode']}; first divergence: **{t['first_divergence'] or 'none'}** "
                  f"({bound}); beyond it: {', '.join(t['failing']) or 'none'}; "
                  f"first tensor that differs at all: {t['first_inexact'] or 'none (bitwise equal)'}", "",
                  "| tensor | shape | max abs | mean abs | max rel | NMSE | SQNR dB | own SQNR dB (shadow) | atol needed | ok |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {d['name']} | {d['shape']} | {d['max_abs']:.3g} | {d['mean_abs']:.3g} | {d['max_rel']:.3g} | "
                  f"{d['nmse']:.3g} | {d['sqnr_db']:.1f} | {o} | {d['atol_needed']:.3g} | {'✓' if d['ok'] else '✗'} |"
                  for d, o in zip(t["tensors"], own)]
        lines += [f"- {p}" for p in t["problems"]]
        lines += ["", "### Where each tensor is taken", ""]
        lines += names.markdown_table([names.Boundary(**b) for b in t["correspondence"]])
    else:
        lines += ["## Tensors", "", t.get("skipped", "")]
    tok = report["tokenization"]
    lines += ["", "## Tokenization", "", f"{tok['lines']} lines" + (f"; {tok['skipped']}" if "skipped" in tok else "")]
    if "skipped" not in tok:
        lines += ["", "| stage | lines that differ |", "|---|---|", *(f"| {s} | {n} |" for s, n in tok["counts"].items())]
    lines += ["", "## Generation", "", "| setting | identical | max score diff |", "|---|---|---|"]
    for name, g in report["generation"].items():
        if "error" in g:
            lines.append(f"| {name} | {g['error']} | |")
        else:
            lines.append(f"| {name} | {g['identical']}/{g['lines']} | {g['max_score_diff']:.3g} |")
    if report.get("system", "native") != "native":
        lines += ["", f"### fairseq's options in {report['system']}'s terms", ""]
        for name, g in report["generation"].items():
            if "mapping" in g:
                lines.append(f"- {name}: {g['options']} → {g['mapping']}"
                             + "".join(f"; not expressible: {n}" for n in g["not_expressible"]))
    for name, g in report["generation"].items():
        for m in g.get("mismatches", [])[:10]:
            first, *rest = mismatch_text(m)
            lines += ["", f"- {name}, line {m['line']}: {first}", *(f"  - {x}" for x in rest)]
    if report.get("scores"):
        b = report["scores"]
        p = b["paired_bootstrap"].get("note") or b["paired_bootstrap"]["p_value"]
        lines += ["", f"## {b['metric']}", "", f"setting {b['setting']}: {score_line(b)}; paired bootstrap p = {p}",
                  f"`{b['port'][b['signature']]}`"]
    return "\n".join(lines) + "\n"
