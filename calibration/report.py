"""The evaluation as one self-contained HTML page: tables, plots and example parts inlined as
base64 images, plain CSS, no script, so it opens in any browser, mails as one file and prints."""

from __future__ import annotations

import base64
import html
import math
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from calibration.calibrate import read_rgb
from calibration.defect_sizes import CENTRAL, DefectSizeSheet
from calibration.evaluate import COMPARED, EvalResult, Item, Metrics, load_masks
from calibration.metrics import AUPRO_FPR_LIMIT, pro_curve, wilson_interval
from edge.evidence import heat_overlay  # the line's own NG evidence scale: the report reads like it

GOOD_COLOUR, DEFECT_COLOUR, THRESHOLD_COLOUR, F1_COLOUR = "#4c72b0", "#dd8452", "#c44e52", "#555555"
TILE = 224  # gallery tile side in px (shown smaller: sharp on high-DPI screens)
GALLERY_N = 6  # parts per gallery section; up to twice that when there are more errors to show

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 34px;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 12px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f4f5f7; font-weight: 600; } td:first-child, th:first-child { text-align: left; }
.meta td { text-align: left; border: none; padding: 1px 12px 1px 0; } .meta td:first-child { color: #666; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 14px; margin: 14px 0; }
.cards { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.bad { color: #b3261e; font-weight: 600; } .ok { color: #1b7f3b; font-weight: 600; }
img.plot { max-width: 100%; }
.part { display: inline-block; margin: 0 14px 16px 0; } .part img { width: 176px; height: 176px; margin-right: 2px; }
.cap { font-size: 12.5px; color: #444; } .legend { color: #666; font-size: 13px; }
"""


# -- numbers --------------------------------------------------------------------------------


def pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def num(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.4g}"


def rate(k: int, n: int) -> str:
    """'1 of 20 (5.0%, 95% CI 0.9–23.6%)': the count first, a rate alone hides how few parts there were."""
    if n == 0:
        return "n/a"
    lo, hi = wilson_interval(k, n)
    return f"{k} of {n} ({pct(k / n)}, 95% CI {100 * lo:.1f}–{100 * hi:.1f}%)"


def table(headers: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells are HTML already (callers escape names); headers are plain text."""
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>" if headers else ""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}">{head}{body}</table>'


# -- images ---------------------------------------------------------------------------------


def png_uri(fig: Figure) -> str:
    buf = BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_uri(bgr: np.ndarray) -> str:
    # Photos of parts as JPEG: a tenth of a PNG's size, so a report with 30 parts stays a few MB.
    _, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def outlined(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """BGR: the part with its ground-truth regions outlined in green."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (60, 220, 60), 2, cv2.LINE_AA)
    return out


def part_html(item: Item, amap: np.ndarray, score: float, threshold: float, label: str, bad: bool) -> str:
    rgb = cv2.resize(read_rgb(item.image), (TILE, TILE), interpolation=cv2.INTER_AREA)
    mask = load_masks([item], (TILE, TILE))[0]
    tiles = [cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), heat_overlay(rgb, amap, threshold), outlined(rgb, mask)]
    imgs = "".join(f'<img src="{jpeg_uri(t)}" alt="">' for t in tiles)
    verdict = f'<span class="{"bad" if bad else "ok"}">{html.escape(label)}</span>'
    return (
        f'<div class="part">{imgs}<div class="cap">{html.escape(item.name)} · score {num(score)} '
        f"· {verdict}</div></div>"
    )


# -- plots ----------------------------------------------------------------------------------


def _style(ax: Axes) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25)


def _threshold_lines(ax: Axes, result: EvalResult) -> None:
    if result.threshold is not None:
        ax.axvline(result.threshold, color=THRESHOLD_COLOUR, lw=1.8, label=f"calibrated {num(result.threshold)}")
    ax.axvline(
        result.overall.f1_threshold,
        color=F1_COLOUR,
        lw=1.2,
        ls="--",
        label=f"F1-max {num(result.overall.f1_threshold)}",
    )


def histograms(result: EvalResult) -> str:
    """Good vs each defect type (and all defects), on shared bins, with the threshold lines."""
    types = ["all defects", *result.per_type]
    edges = np.histogram_bin_edges(result.scores, bins=36)
    good = result.scores[~result.labels]
    cols = min(2, len(types))
    rows = math.ceil(len(types) / cols)
    fig = Figure(figsize=(5.6 * cols, 2.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    for ax, t in zip(axes.flat, types):
        sel = result.labels if t == "all defects" else np.array([i.defect == t for i in result.items])
        auroc = result.overall.image_auroc if t == "all defects" else result.per_type[t].image_auroc
        n_good, *_ = ax.hist(good, edges, color=GOOD_COLOUR, alpha=0.65, label=f"good ({good.size})")
        n_bad, *_ = ax.hist(result.scores[sel], edges, color=DEFECT_COLOUR, alpha=0.65, label=f"{t} ({int(sel.sum())})")
        _threshold_lines(ax, result)
        ax.set_ylim(0, 1.6 * max(n_good.max(), n_bad.max()))  # headroom: the legend never hides bars
        ax.set_title(f"good vs {t}   ·   image AUROC {pct(auroc)}", fontsize=10.5)
        ax.set_ylabel("parts")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, frameon=False, loc="upper center", ncols=2)
        _style(ax)
    for ax in axes.flat[len(types) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("image score")
    fig.tight_layout()
    return png_uri(fig)


def _pro_points(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # A PRO curve has a point per distinct pixel score (millions); 600 on the plotted range suffice.
    fpr, pro = pro_curve(maps, masks)
    x = np.linspace(0, 0.35, 600)
    return x, np.interp(x, fpr, pro)


def curves(result: EvalResult) -> str:
    """Image ROC with the calibrated operating point, and the PRO curve AUPRO integrates."""
    fig = Figure(figsize=(11.2, 4.4))
    roc_ax, pro_ax = fig.subplots(1, 2)
    labels = result.labels
    sets = [("all defects", np.ones(len(labels), bool), result.overall)] + [
        (t, ~labels | np.array([i.defect == t for i in result.items]), m) for t, m in result.per_type.items()
    ]
    for k, (name, sel, m) in enumerate(sets):
        style = {"color": "black", "lw": 2.2} if k == 0 else {"lw": 1.2, "alpha": 0.85}
        fpr, tpr, _ = roc_curve(labels[sel], result.scores[sel])
        roc_ax.plot(fpr, tpr, label=f"{name} ({pct(m.image_auroc)})", **style)
        x, y = _pro_points(result.maps[sel], result.masks[sel])
        pro_ax.plot(x, y, label=f"{name} ({pct(m.aupro)})", **style)
    if result.threshold is not None:
        c = result.overall.confusion
        roc_ax.plot(
            c.false_reject_rate,
            1 - c.false_accept_rate,
            "o",
            color=THRESHOLD_COLOUR,
            ms=8,
            label="calibrated threshold",
        )
    roc_ax.plot([0, 1], [0, 1], ls=":", color="#999")
    roc_ax.set(
        xlabel="false-reject rate (good parts judged NG)",
        ylabel="defects caught",
        title="Image ROC (AUROC)",
        xlim=(-0.01, 1),
        ylim=(0, 1.02),
    )
    pro_ax.axvspan(0, AUPRO_FPR_LIMIT, color="#eef2f8")
    pro_ax.axvline(AUPRO_FPR_LIMIT, color="#999", ls=":")
    pro_ax.set(
        xlabel="false-positive rate on defect-free pixels",
        ylabel="per-region overlap (PRO)",
        title=f"PRO curve (AUPRO to FPR {AUPRO_FPR_LIMIT:g}, normalised)",
        xlim=(0, 0.35),
        ylim=(0, 1.02),
    )
    for ax in (roc_ax, pro_ax):
        ax.legend(fontsize=8, frameon=False, loc="lower right")
        _style(ax)
    fig.tight_layout()
    return png_uri(fig)


# -- sections -------------------------------------------------------------------------------


def _metric_cells(m: Metrics) -> list[str]:
    return [
        str(m.n_good),
        str(m.n_defect),
        pct(m.image_auroc),
        pct(m.pixel_auroc),
        pct(m.aupro),
        f"{pct(m.f1_max)} @ {num(m.f1_threshold)}",
    ]


def summary(result: EvalResult) -> str:
    m = result.overall
    rows = [
        ["image AUROC", pct(m.image_auroc)],
        ["pixel AUROC", pct(m.pixel_auroc)],
        [f"AUPRO (FPR ≤ {AUPRO_FPR_LIMIT:.0%}, normalised)", pct(m.aupro)],
        ["F1-max (image) @ threshold", f"{pct(m.f1_max)} @ {num(m.f1_threshold)}"],
    ]
    out = table(["metric", "value"], rows)
    cal, c = result.calibration, m.confusion
    if cal is None or c is None:
        return out
    rows = [
        ["threshold (μ + kσ)", f"{num(cal.threshold)} = {num(cal.mu)} + {cal.k:g}·{num(cal.sigma)}"],
        ["pixel threshold (NG regions)", num(cal.pixel_threshold)],
        ["false rejects (good → NG)", rate(c.fp, c.fp + c.tn)],
        ["false accepts (defect → OK)", rate(c.fn, c.fn + c.tp)],
    ]
    matrix = table(
        ["", "judged OK", "judged NG"],
        [
            ["good parts", str(c.tn), f'<span class="{"bad" if c.fp else ""}">{c.fp}</span>'],
            ["defective parts", f'<span class="{"bad" if c.fn else ""}">{c.fn}</span>', str(c.tp)],
        ],
    )
    return (
        f'<div class="cards"><div>{out}</div><div>{table(["at the calibrated threshold", ""], rows)}'
        f"{matrix}</div></div>"
    )


def per_type(result: EvalResult) -> str:
    headers = ["defect type", "good", "defect", "image AUROC", "pixel AUROC", "AUPRO", "F1-max @ thr"]
    if result.threshold is not None:
        headers.append("false accepts")
    rows = []
    for t, m in result.per_type.items():
        row = [html.escape(t), *_metric_cells(m)]
        if m.confusion is not None:
            row.append(rate(m.confusion.fn, m.confusion.fn + m.confusion.tp))
        rows.append(row)
    return table(headers, rows)


def gallery(result: EvalResult) -> str:
    """Defects with the lowest scores, good parts with the highest, and a typical caught defect per type."""
    thr = result.threshold if result.threshold is not None else result.overall.f1_threshold
    which = "calibrated" if result.threshold is not None else "F1-max"
    idx = np.arange(len(result.items))
    defects = idx[result.labels][np.argsort(result.scores[result.labels], kind="stable")]
    goods = idx[~result.labels][np.argsort(-result.scores[~result.labels], kind="stable")]

    def parts(indices, label_of) -> str:
        return "".join(part_html(result.items[i], result.maps[i], result.scores[i], thr, *label_of(i)) for i in indices)

    def defect_label(i: int) -> tuple[str, bool]:
        caught = result.scores[i] > thr
        return ("caught (NG)", False) if caught else ("FALSE ACCEPT (judged OK)", True)

    def good_label(i: int) -> tuple[str, bool]:
        rejected = result.scores[i] > thr
        return ("FALSE REJECT (judged NG)", True) if rejected else ("passed (OK)", False)

    typical = []
    for t in result.per_type:
        caught = [i for i in defects if result.items[i].defect == t and result.scores[i] > thr]
        if caught:
            typical.append(caught[len(caught) // 2])
    n_fa = int((result.scores[defects] <= thr).sum())
    n_fr = int((result.scores[goods] > thr).sum())
    legend = (
        f'<p class="legend">Each part: the image · its anomaly map (blue at its lowest score, red at '
        f"its peak or at the {which} threshold {num(thr)}, whichever is higher) · the ground truth "
        f"outlined in green.</p>"
    )
    return (
        legend
        + f"<h3>False accepts: {n_fa or 'none'} · the defects with the lowest scores</h3>"
        + parts(defects[: max(GALLERY_N, min(n_fa, 2 * GALLERY_N))], defect_label)
        + f"<h3>False rejects: {n_fr or 'none'} · the good parts with the highest scores</h3>"
        + parts(goods[: max(GALLERY_N, min(n_fr, 2 * GALLERY_N))], good_label)
        + f"<h3>Typical caught defects (median score of each type)</h3>{parts(typical, defect_label)}"
    )


def comparison_html(diff: dict) -> str:
    rows = [
        [
            COMPARED[k],
            pct(v["deployed"]),
            pct(v["reference"]),
            "n/a" if v["diff"] is None else f"{100 * v['diff']:+.2f} pt",
        ]
        for k, v in diff["overall"].items()
    ]
    ok = diff["within_budget"]
    verdict = (
        f"<p>Image AUROC drop {diff['image_auroc_drop_points']:+.2f} points (budget "
        f'{diff["budget_points"]:g}): <span class="{"ok" if ok else "bad"}">'
        f"{'within budget' if ok else 'OVER BUDGET'}</span>. Largest score difference "
        f"{num(diff['score_max_abs_diff'])}, anomaly maps: max {num(diff['map_max_abs_diff'])}, "
        f"mean {num(diff['map_mean_abs_diff'])}.</p>"
    )
    ref = diff.get("reference") or {}
    runtime = ref.get("runtime") or {}
    source = (
        (
            f'<p class="legend">Reference: the trained model in PyTorch {html.escape(str(runtime.get("version", "?")))}, '
            f"{html.escape(str(runtime.get('precision', '?')))} on {html.escape(str(runtime.get('device', '?')))}, "
            f"scored {html.escape(str(ref.get('created_at', '?')))} when the bundle was exported "
            f"(reference.npz); the same files, read and measured by the same code.</p>"
        )
        if ref
        else ""
    )
    return source + table(["metric", "deployed", "reference (PyTorch)", "deployed − reference"], rows) + verdict


def defect_size_section(sheet: DefectSizeSheet) -> str:
    """The defect-size sheet: share caught against size in camera pixels, one line per type, and its table."""
    sy, sx = sheet.model_px_per_native_px
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    for kind, colour in zip(sheet.kinds, (GOOD_COLOUR, DEFECT_COLOUR, F1_COLOUR)):
        shares = [100 * k / n for k, n in (sheet.caught(kind, size) for size in sheet.sizes)]
        ax.plot(sheet.sizes, shares, "o-", color=colour, label=kind)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sheet.sizes, [f"{s}\n({s * min(sy, sx):.2g})" for s in sheet.sizes])
    ax.set_ylim(-3, 103)
    ax.set_xlabel("defect size, camera px (model px)")
    ax.set_ylabel("caught at threshold, %")
    ax.legend(frameon=False)
    _style(ax)
    rows = [
        [str(size), f"{size * sy:.2g}" + ("" if math.isclose(sy, sx, rel_tol=0.01) else f"×{size * sx:.2g}")]
        + [rate(*sheet.caught(kind, size)) for kind in sheet.kinds]
        for size in sheet.sizes
    ]
    legend = (
        f'<p class="legend">Synthetic scratches (a line of that length), spots (a disc of that diameter) '
        f"and dents (a shaded disc) planted one per image on {sheet.n_images} good parts × {sheet.repeats} "
        f"({html.escape(sheet.source)}; never the test set), {100 * sheet.contrast:g}% of full scale "
        f"darker or brighter than the surface, in the central {100 * CENTRAL:g}% of the frame, scored "
        f"through the bundle as the line scores; caught: score &gt; {num(sheet.threshold)}. The clean "
        f"images themselves: {rate(sheet.clean_rejected, sheet.n_images)} over the threshold.</p>"
    )
    plot = f'<img class="plot" src="{png_uri(fig)}" alt="share caught by defect size">'
    return legend + plot + table(["size (camera px)", "model px", *sheet.kinds], rows)


def render(result: EvalResult) -> str:
    meta, cal = result.meta, result.calibration
    backend = meta.get("backend", {})
    info = [
        ["model", meta.get("model", "?")],
        ["method", meta.get("method", "?")],
        [
            "backend",
            f"{backend.get('backend', '?')} {backend.get('version', '')} {', '.join(backend.get('providers', []))}",
        ],
        ["data", meta.get("data", "?")],
        [
            "calibration",
            "none"
            if cal is None
            else f"{cal.n} good parts ({(cal.raw.get('data') or {}).get('source', 'source not recorded')}), "
            f"{cal.raw.get('created_at', 'date not recorded')}",
        ],
        ["parts", f"{result.overall.n_good} good, {result.overall.n_defect} defective ({len(result.per_type)} types)"],
        [
            "model input · pixel grid",
            f"{'×'.join(map(str, meta.get('input', [])))} · {'×'.join(map(str, result.maps.shape[1:]))}",
        ],
        [
            "inference",
            f"{meta['inference_s']:.1f} s ({len(result.items) / meta['inference_s']:.1f} parts/s)"
            if "inference_s" in meta
            else "n/a",
        ],
        ["created", meta.get("created_at", "?")],
    ]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    sections = [
        f"<h1>Evaluation · {html.escape(str(meta.get('model', 'model')))}</h1>",
        '<p class="sub">Measured on the deployed artifact, with the backend the line runs.</p>',
        table([], [[html.escape(str(k)), html.escape(str(v))] for k, v in info], "meta"),
        f'<div class="notes"><ul>{notes}</ul></div>' if notes else "",
        "<h2>Summary</h2>",
        summary(result),
        '<h2>Per defect type</h2><p class="legend">Each type against all good parts.</p>',
        per_type(result),
        "<h2>Score distributions</h2>",
        f'<img class="plot" src="{histograms(result)}" alt="score histograms">',
        "<h2>ROC and PRO curves</h2>",
        f'<img class="plot" src="{curves(result)}" alt="ROC and PRO curves">',
    ]
    if result.comparison is not None:
        sections += ["<h2>Deployed vs reference model</h2>", comparison_html(result.comparison)]
    if result.defect_sizes is not None:
        sections += ["<h2>Defect sizes caught</h2>", defect_size_section(result.defect_sizes)]
    sections += ["<h2>Parts to look at</h2>", gallery(result)]
    body = "\n".join(sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Evaluation · '
        f"{html.escape(str(meta.get('model', '')))}</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def write_report(result: EvalResult, path: Path) -> Path:
    path.write_text(render(result), encoding="utf-8")
    return path
