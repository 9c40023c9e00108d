"""Human-readable output: the stage table, the result file, and the Markdown report over committed results.

``edge-bench report`` reads every JSON result under ``benchmarks/results/``, takes the newest speed result per
configuration and the newest result of each evaluation, and writes one Markdown page (``REPORT.md``) and its
PNG charts next to them.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.bench.machine import slug
from edge_agent.bench.speed import STAGES
from edge_agent.paths import repo_root

log = logging.getLogger(__name__)

RESULT_SCHEMA = 1


def results_dir() -> Path:
    return repo_root() / "benchmarks" / "results"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_filename(device: str, ort_version: str, config: str, when: datetime | None = None) -> str:
    day = (when or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{slug(device)}_ort{ort_version}_{day}_{slug(config)}.json"


def write_result(data: dict[str, Any], out_dir: Path, device: str, ort_version: str, config: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / result_filename(device, ort_version, config)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def stage_table(summary: dict[str, Any], title: str = "") -> str:
    rows = [f"{'stage':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'n':>7}"]
    for stage in STAGES:
        s = summary["stages_ms"].get(stage)
        if s:
            rows.append(f"{stage:<22}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['p99']:>10.2f}{s['mean']:>10.2f}{s['n']:>7}")
    rows.append(f"frames {summary['frames']}, faces/frame {summary['faces_per_frame']}, "
                f"sequential {summary['fps_sequential']:.2f} fps")
    pipe = summary.get("pipelined")
    if pipe and pipe.get("fps"):
        lat = {k: pipe.get("latency_ms", {}).get(k, float("nan")) for k in ("p50", "p95", "p99")}
        rows.append(f"pipelined daemon: {pipe['fps']:.2f} fps (pace=fast); capture->publish at pace="
                    f"{pipe.get('latency_pace', '?')}: p50 {lat['p50']:.1f} ms p95 {lat['p95']:.1f} ms "
                    f"p99 {lat['p99']:.1f} ms")
    elif pipe:
        rows.append(f"pipelined daemon: not measured ({pipe.get('skipped', 'unknown reason')})")
    eff = summary.get("efficiency")
    if eff and eff.get("gflop_per_frame") is not None:
        rows.append(
            f"efficiency: {eff['fps']:.2f} fps x {eff['gflop_per_frame']:.3f} GFLOP/frame = "
            f"{eff['achieved_gflops']:.2f} GFLOP/s = {100 * eff['fraction_of_peak']:.2f} % of the "
            f"{eff['gemm_peak_gflops']:.1f} GFLOP/s fp32 GEMM peak"
        )
    elif eff:
        rows.append(f"efficiency: not computed ({eff.get('skipped', 'unknown reason')})")
    text = "\n".join(rows)
    return f"{title}\n{text}" if title else text


def ratio_table(ratio: dict[str, Any], name_a: str, name_b: str) -> str:
    rows = [f"A = {name_a}", f"B = {name_b}", f"{'stage (A/B ms)':<22}{'p50':>9}{'p95':>9}{'p99':>9}{'mean':>9}"]

    def f(v: float | None) -> str:
        return f"{v:>9.3f}" if v is not None else f"{'-':>9}"

    for stage in STAGES:
        r = ratio["stages_ms"].get(stage)
        if r:
            rows.append(f"{stage:<22}{f(r.get('p50'))}{f(r.get('p95'))}{f(r.get('p99'))}{f(r.get('mean'))}")
    rows.append(f"fps_sequential A/B: {ratio['fps_sequential']}")
    if "fps_pipelined" in ratio:
        rows.append(f"fps_pipelined A/B: {ratio['fps_pipelined']}")
    if "fps_e2e" in ratio:
        kinds = ratio.get("fps_e2e_kinds") or ["?", "?"]
        rows.append(f"fps_e2e A/B: {ratio['fps_e2e']} (A {kinds[0]}, B {kinds[1]})")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------------
# Markdown report


def _identical_cell(ag: dict[str, Any] | None) -> str:
    if not ag:
        return "-"
    verdict = "identical" if ag.get("identical") else "differ"
    return f"{verdict} ({ag.get('worst_iou')}, {ag.get('unmatched')})"


def _load_results(folder: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for p in sorted(folder.glob("*.json")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            log.warning("skipping unreadable result %s", p)
            continue
        if isinstance(data, dict) and data.get("schema") == RESULT_SCHEMA and "kind" in data:
            out.append((p, data))
    return out


def _bar_chart(path: Path, rows: list[tuple[str, dict[str, Any]]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no charts (pip install 'edge-agent[bench]')")
        return False
    stages = [s for s in STAGES if s not in ("total", "classifier_per_face", "capture")]
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.5 * len(rows)))
    for i, (_name, summ) in enumerate(rows):
        left = 0.0
        for j, st in enumerate(stages):
            v = summ["stages_ms"].get(st, {}).get("p50", 0.0)
            ax.barh(i, v, left=left, color=f"C{j}", label=st if i == 0 else None)
            left += v
    ax.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=7)
    ax.set_xlabel("p50 ms per frame (sequential stages)")
    ax.legend(fontsize=7, ncols=6, loc="upper center", bbox_to_anchor=(0.5, -0.45 if len(rows) < 3 else -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _check_cell(c: dict[str, Any] | None) -> str:
    if not c:
        return "-"
    mark = "n/a" if c.get("met") is None else ("**met**" if c["met"] else "not met")
    return f"{c.get('value')} ({c.get('op')} {c.get('target')}: {mark})"


def _newest_soak_memory(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    for p in sorted(folder.glob("soak_memory_*.json"), reverse=True):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "rss_max_after_warmup_mb" in data:
            return p, data
    return None


def targets_section(results: list[tuple[Path, dict[str, Any]]], folder: Path) -> list[str]:
    """Markdown lines: the issue-8 target checks of the newest result of each configuration (targets.py)."""
    newest: dict[str, tuple[Path, dict[str, Any]]] = {}
    for p, d in results:
        if d.get("kind") in ("compare", "speed"):
            has = d.get("targets") if d["kind"] == "compare" else (d.get("result") or {}).get("targets")
            if has:
                newest[d["config_name"]] = (p, d)
    mem = _newest_soak_memory(folder)
    if not newest and mem is None:
        return []
    lines = ["## Issue 8 targets (newest result per configuration; docs/bench.md)", ""]
    defaults = [(p, d) for p, d in newest.values() if "default_mode" in (d.get("targets") or {})]
    if defaults:
        lines += ["| A vs reference | source | e2e fps A / B | fps ratio | identical detections (worst IoU) "
                  "| p99/p50 | frame time / inference | latency p50 / inference | file |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for p, d in sorted(defaults, key=lambda x: x[0].name):
            t, ag = d["targets"]["default_mode"], d.get("identical_detections") or {}
            lines.append(f"| `{d['specs']['A']}` | {d['source']['name']} | {t['fps_a']} ({t['fps_a_kind']}) / "
                         f"{t['fps_b']} ({t['fps_b_kind']}) | {_check_cell(t['fps_ratio'])} | "
                         f"{t['identical_detections']} ({ag.get('worst_iou')}, unmatched {ag.get('unmatched')}) | "
                         f"{_check_cell(t['latency_tail'])} | {_check_cell(t['overhead'])} | "
                         f"{_check_cell(t.get('latency_overhead'))} | `{p.name}` |")
        lines.append("")
    multi = []
    for p, d in newest.values():
        groups = d.get("targets") if d["kind"] == "compare" else d["result"]["targets"]
        for key, t in (groups or {}).items():
            if key.startswith("multi_face"):
                side = {"multi_face_a": " (A)", "multi_face_b": " (B)"}.get(key, "")
                multi.append((p, d["config_name"] + side, t))
    if multi:
        lines += ["| multi-face configuration | faces/frame | classifier ms per face | e2e fps | file |",
                  "|---|---:|---|---|---|"]
        for p, name, t in sorted(multi, key=lambda x: x[1]):
            lines.append(f"| {name} | {t['faces_per_frame']} | {_check_cell(t['classifier_ms_per_face'])} | "
                         f"{_check_cell(t['fps'])} ({t['fps_kind']}) | `{p.name}` |")
        lines.append("")
    if mem is not None:
        p, d = mem
        models = (d.get("final_status") or {}).get("models")
        end = d.get("end") or {}
        lines += [f"Memory (target 5): daemon RSS max after warm-up **{d['rss_max_after_warmup_mb']} MB** "
                  f"(target <= {d.get('memory_target_mb')} MB: {'met' if d.get('memory_target_met') else 'not met'}; "
                  f"RssAnon {end.get('rss_anon_mb')} MB, RssFile {end.get('rss_file_mb')} MB at the end), models "
                  f"{models}, `{p.name}`.", ""]
    return lines


def _binary_lines(b: dict[str, Any] | None) -> list[str]:
    """The positive-class table of an evaluation's ``binary`` block (binary models, or --positive)."""
    if not b:
        return []

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}"

    over = f" over the {b['over']}" if b.get("over") else ""
    neg = b["negative"] if isinstance(b["negative"], str) else ", ".join(b["negative"])
    return ["", f"Positive class `{b['positive']}` (negative: `{neg}`){over}; precision, recall and F1 "
                f"of the {b['decision']}, AP and ROC-AUC from the positive-class probability "
                f"(PR curve `{b['pr_curve']}`):", "",
            "| precision | recall | F1 | AP | ROC-AUC | tp | fp | fn | tn |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {f(b['precision'])} | {f(b['recall'])} | {f(b['f1'])} | {f(b['average_precision'])} | "
            f"{f(b['roc_auc'])} | {b['tp']} | {b['fp']} | {b['fn']} | {b['tn']} |"]


def write_report(folder: Path, out: Path | None = None) -> Path:
    results = _load_results(folder)
    if not results:
        raise FileNotFoundError(f"no edge-bench result files in {folder}; run edge-bench first")
    out = out or folder / "REPORT.md"
    latest_speed: dict[str, tuple[Path, dict[str, Any]]] = {}
    latest_other: dict[str, tuple[Path, dict[str, Any]]] = {}
    for p, d in results:
        if d["kind"] == "speed":
            latest_speed[d["config_name"]] = (p, d)  # files sort by date within a config
        else:
            latest_other[f"{d['kind']}:{d.get('config_name', '')}"] = (p, d)
    lines = ["# edge-bench report", "", f"Generated {now_iso()} from `{folder}` by `edge-bench report`.", ""]
    lines += targets_section(results, folder)
    if latest_speed:
        lines += ["## Speed (newest result per configuration)", "",
                  "| configuration | machine | source | faces/frame | detector p50 ms | classifier p50 ms "
                  "| total p50 ms | p95 | p99 | seq. fps | pipelined fps | capture->publish p50 ms "
                  "| % GEMM peak | file |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        chart_rows = []
        for name, (p, d) in sorted(latest_speed.items()):
            s = d["result"]
            st = s["stages_ms"]
            pipe = s.get("pipelined") or {}
            eff = s.get("efficiency") or {}
            frac = eff.get("fraction_of_peak")
            lines.append(
                f"| {name} | {d['machine']['cpu_model']} ({d['machine']['cores']} cores) | {d['source']['name']} | "
                f"{s['faces_per_frame']} | {st['detector']['p50']:.2f} | "
                f"{st.get('classifier', {}).get('p50', 0):.2f} | "
                f"{st['total']['p50']:.2f} | {st['total']['p95']:.2f} | {st['total']['p99']:.2f} | "
                f"{s['fps_sequential']:.2f} | {pipe.get('fps', '-')} | {pipe.get('latency_ms', {}).get('p50', '-')} | "
                f"{'-' if frac is None else f'{100 * frac:.2f}'} | `{p.name}` |"
            )
            chart_rows.append((name, s))
        png = out.with_name("report_stages.png")
        if _bar_chart(png, chart_rows):
            lines += ["", f"![stage p50 per configuration]({png.name})"]
        lines.append("")
    compares = {k: v for k, v in latest_other.items() if k.startswith("compare:")}
    if compares:
        lines += ["## A/B comparisons (interleaved in one run; ratio = A / B)", "",
                  "| A | B | source | total p50 A/B | total p95 A/B | detector p50 A/B | seq. fps A/B | A fps | "
                  "B fps | A recall vs B (IoU 0.5) | e2e fps A/B | identical detections (worst IoU, unmatched) | "
                  "file |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for _key, (p, d) in sorted(compares.items()):
            r = d["ratio_a_over_b"]
            tot, det = r["stages_ms"].get("total", {}), r["stages_ms"].get("detector", {})
            recall = (d.get("detection_agreement") or {}).get("A", {}).get("recall")  # older files: none
            lines.append(f"| `{d['specs']['A']}` | `{d['specs']['B']}` | {d['source']['name']} | {tot.get('p50')} | "
                         f"{tot.get('p95')} | {det.get('p50')} | {r['fps_sequential']} | "
                         f"{d['results']['A']['fps_sequential']:.2f} | {d['results']['B']['fps_sequential']:.2f} | "
                         f"{'–' if recall is None else recall} | {r.get('fps_e2e', '-')} | "
                         f"{_identical_cell(d.get('identical_detections'))} | `{p.name}` |")
        lines.append("")
    for key, (p, d) in sorted(latest_other.items()):
        if key in compares:
            continue
        lines += [f"## {key}", "", f"File `{p.name}`, {d.get('created', '')}.", ""]
        summ = d.get("summary", {})
        if summ:
            lines += ["| metric | value |", "|---|---:|"]
            lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in summ.items()]
        lines += _binary_lines(d.get("binary"))
        for png in d.get("plots", []):
            lines += ["", f"![{key}]({Path(png).name})"]
        if d.get("baselines"):
            lines += ["", "Reference figures from the seed documents (their data, not re-measured here):", ""]
            lines += [f"- {k}: {v}" for k, v in d["baselines"].items()]
        lines.append("")
    out.write_text("\n".join(lines), encoding="utf-8")
    return out
