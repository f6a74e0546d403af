"""The evaluation as one self-contained HTML page: tables, plots and example parts inlined as
base64 images, plain CSS, no script, so it opens in any browser, mails as one file and prints.

The page is ``templates/report.html.j2``, rendered by Jinja2 with autoescaping: what comes from
the data (defect types, file names, notes, paths) is text wherever it lands. This module computes
what the page shows; the template lays it out, one block per section."""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path

import cv2
import jinja2
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


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell with a CSS class (``bad``, ``ok``); a plain cell is a str."""

    text: str
    cls: str = ""


@dataclass(frozen=True, slots=True)
class Part:
    """One part in the gallery: its image, anomaly map and ground truth, and its caption."""

    images: tuple[str, str, str]  # data: URIs
    name: str
    score: str
    label: str
    bad: bool


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


def gallery_part(item: Item, amap: np.ndarray, score: float, threshold: float, label: str, bad: bool) -> Part:
    rgb = cv2.resize(read_rgb(item.image), (TILE, TILE), interpolation=cv2.INTER_AREA)
    mask = load_masks([item], (TILE, TILE))[0]
    tiles = (cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), heat_overlay(rgb, amap, threshold), outlined(rgb, mask))
    return Part((jpeg_uri(tiles[0]), jpeg_uri(tiles[1]), jpeg_uri(tiles[2])), item.name, num(score), label, bad)


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
    c = result.overall.confusion
    if result.threshold is not None and c is not None:
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


def summary(result: EvalResult) -> dict:
    m = result.overall
    metrics = [
        ["image AUROC", pct(m.image_auroc)],
        ["pixel AUROC", pct(m.pixel_auroc)],
        [f"AUPRO (FPR ≤ {AUPRO_FPR_LIMIT:.0%}, normalised)", pct(m.aupro)],
        ["F1-max (image) @ threshold", f"{pct(m.f1_max)} @ {num(m.f1_threshold)}"],
    ]
    cal, c = result.calibration, m.confusion
    if cal is None or c is None:
        return {"metrics": metrics, "calibration": None}
    return {
        "metrics": metrics,
        "calibration": [
            ["threshold (μ + kσ)", f"{num(cal.threshold)} = {num(cal.mu)} + {cal.k:g}·{num(cal.sigma)}"],
            ["pixel threshold (NG regions)", num(cal.pixel_threshold)],
            ["false rejects (good → NG)", rate(c.fp, c.fp + c.tn)],
            ["false accepts (defect → OK)", rate(c.fn, c.fn + c.tp)],
        ],
        "matrix": [
            ["good parts", str(c.tn), Cell(str(c.fp), "bad" if c.fp else "")],
            ["defective parts", Cell(str(c.fn), "bad" if c.fn else ""), str(c.tp)],
        ],
    }


def per_type(result: EvalResult) -> dict:
    headers = ["defect type", "good", "defect", "image AUROC", "pixel AUROC", "AUPRO", "F1-max @ thr"]
    if result.threshold is not None:
        headers.append("false accepts")
    rows = []
    for t, m in result.per_type.items():
        row = [t, *_metric_cells(m)]
        if m.confusion is not None:
            row.append(rate(m.confusion.fn, m.confusion.fn + m.confusion.tp))
        rows.append(row)
    return {"headers": headers, "rows": rows}


def gallery(result: EvalResult) -> dict:
    """Defects with the lowest scores, good parts with the highest, and a typical caught defect per type."""
    thr = result.threshold if result.threshold is not None else result.overall.f1_threshold
    idx = np.arange(len(result.items))
    defects = idx[result.labels][np.argsort(result.scores[result.labels], kind="stable")]
    goods = idx[~result.labels][np.argsort(-result.scores[~result.labels], kind="stable")]

    def parts(indices, label_of) -> list[Part]:
        return [gallery_part(result.items[i], result.maps[i], result.scores[i], thr, *label_of(i)) for i in indices]

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
    return {
        "which": "calibrated" if result.threshold is not None else "F1-max",
        "threshold": num(thr),
        "false_accepts": n_fa,
        "defects": parts(defects[: max(GALLERY_N, min(n_fa, 2 * GALLERY_N))], defect_label),
        "false_rejects": n_fr,
        "goods": parts(goods[: max(GALLERY_N, min(n_fr, 2 * GALLERY_N))], good_label),
        "typical": parts(typical, defect_label),
    }


def comparison(diff: dict) -> dict:
    ref = diff.get("reference") or {}
    runtime = ref.get("runtime") or {}
    return {
        "rows": [
            [
                COMPARED[k],
                pct(v["deployed"]),
                pct(v["reference"]),
                "n/a" if v["diff"] is None else f"{100 * v['diff']:+.2f} pt",
            ]
            for k, v in diff["overall"].items()
        ],
        "source": {
            "version": str(runtime.get("version", "?")),
            "precision": str(runtime.get("precision", "?")),
            "device": str(runtime.get("device", "?")),
            "created_at": str(ref.get("created_at", "?")),
        }
        if ref
        else None,
        "drop": f"{diff['image_auroc_drop_points']:+.2f}",
        "budget": f"{diff['budget_points']:g}",
        "ok": diff["within_budget"],
        "score_max": num(diff["score_max_abs_diff"]),
        "map_max": num(diff["map_max_abs_diff"]),
        "map_mean": num(diff["map_mean_abs_diff"]),
    }


def defect_sizes(sheet: DefectSizeSheet) -> dict:
    """The defect-size sheet: share caught against size in camera pixels, one line per kind, and its table."""
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
    return {
        "plot": png_uri(fig),
        "n_images": sheet.n_images,
        "repeats": sheet.repeats,
        "source": sheet.source,
        "contrast": f"{100 * sheet.contrast:g}",
        "central": f"{100 * CENTRAL:g}",
        "threshold": num(sheet.threshold),
        "clean": rate(sheet.clean_rejected, sheet.n_images),
        "headers": ["size (camera px)", "model px", *sheet.kinds],
        "rows": [
            [str(size), f"{size * sy:.2g}" + ("" if math.isclose(sy, sx, rel_tol=0.01) else f"×{size * sx:.2g}")]
            + [rate(*sheet.caught(kind, size)) for kind in sheet.kinds]
            for size in sheet.sizes
        ],
    }


def meta_rows(result: EvalResult) -> list[list[str]]:
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
    return [[str(k), str(v)] for k, v in info]


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("calibration", "templates"),
        autoescape=True,  # always on, whatever a template's name: the data is text
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render instead of showing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def render(result: EvalResult) -> str:
    return _template().render(
        model=str(result.meta.get("model", "")),
        info=meta_rows(result),
        notes=result.notes,
        summary=summary(result),
        per_type=per_type(result),
        histograms=histograms(result),
        curves=curves(result),
        comparison=None if result.comparison is None else comparison(result.comparison),
        defect_sizes=None if result.defect_sizes is None else defect_sizes(result.defect_sizes),
        gallery=gallery(result),
    )


def write_report(result: EvalResult, path: Path) -> Path:
    path.write_text(render(result), encoding="utf-8")
    return path
