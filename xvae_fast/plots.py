"""Figures of runs, evaluations and samples: loss curves (like the paper's Figures 5-6), image grids,
scatter plots and the alpha-sweep plot. matplotlib runs with the Agg backend (no display needed)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _series(history: List[Dict], stage: str, key: str):
    xs, ys = [], []
    for r in history:
        if r.get("stage") == stage and r.get(key) is not None:
            xs.append(r["epoch"])
            ys.append(r[key])
    return xs, ys


def _panels(stages) -> List[tuple]:
    """(stage, term, title) per panel: the last train stage first (the model's objective), then the
    earlier ones; the KL's categorical and Gaussian parts share the KL panel, and a stage whose loss
    is its reconstruction (the autoencoder) gets the one panel."""
    panels = []
    for stage, label, terms in reversed(list(stages)):
        shown = [t for t in terms if t not in ("kl_cat", "kl_gauss")]
        if tuple(terms) == ("loss", "recon"):
            shown = ["recon"]
        for t in shown:
            name = {"loss": "total objective", "recon": "reconstruction", "kl": "KL"}.get(t, t)
            panels.append((stage, t, f"{label}: {name}"))
    return panels


def plot_curves(history: List[Dict], path: str, title: str = "", stages=None) -> None:
    """Training curves per train stage against epoch, train and test: `stages` is a list of (stage
    name, label, terms) (default: X-VAE's, `ae` then `vae`; stages without history are left out)."""
    plt = _plt()
    if stages is None:
        stages = [("ae", "stage-1 AE", ("loss", "recon")),
                  ("vae", "VAE", ("loss", "recon", "kl", "kl_cat", "kl_gauss"))]
    stages = [s for s in stages if any(r.get("stage") == s[0] for r in history)]
    panels = _panels(stages) or [("vae", "loss", "total objective")]
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, (stage, key, name) in zip(axes.flat, panels):
        for split, style in (("train", "-"), ("test", "--")):
            xs, ys = _series(history, stage, f"{split}_{key}")
            if xs:
                ax.plot(xs, ys, style, marker="o", ms=2.5, label=split)
        if key == "kl":
            for part, color in (("kl_cat", "tab:green"), ("kl_gauss", "tab:red")):
                xs, ys = _series(history, stage, f"train_{part}")
                if xs and any(abs(y) > 0 for y in ys):
                    ax.plot(xs, ys, ":", color=color, label=f"train {part[3:]}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"epoch ({stage})")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def image_grid(images: torch.Tensor, nrow: int, pad: int = 1, upscale: int = 1) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> an (H', W', 3) float array laid out nrow images per row."""
    x = images.detach().float().cpu().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    if upscale > 1:
        x = x.repeat_interleave(upscale, 2).repeat_interleave(upscale, 3)
    n, c, h, w = x.shape
    ncol = nrow
    rows = (n + ncol - 1) // ncol
    grid = np.ones(((h + pad) * rows + pad, (w + pad) * ncol + pad, 3), dtype=np.float32)
    for i in range(n):
        r, cidx = divmod(i, ncol)
        y0, x0 = pad + r * (h + pad), pad + cidx * (w + pad)
        grid[y0:y0 + h, x0:x0 + w] = x[i].permute(1, 2, 0).numpy()
    return grid


def _upscale_for(h: int) -> int:
    return max(1, 48 // h)


def save_image_rows(rows: Sequence[torch.Tensor], labels: Sequence[str], path: str, title: str = "") -> None:
    """Rows of images (each (N, C, H, W)), one labelled band per row."""
    plt = _plt()
    h = rows[0].shape[2]
    up = _upscale_for(h)
    ncol = max(r.shape[0] for r in rows)
    grids = [image_grid(r, ncol, upscale=up) for r in rows]
    fig_h = sum(g.shape[0] for g in grids) / 80 + 0.6
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(4, grids[0].shape[1] / 80 + 1.2), fig_h),
                             squeeze=False)
    for ax, g, lab in zip(axes[:, 0], grids, labels):
        ax.imshow(g, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(lab, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8, title: str = "") -> None:
    plt = _plt()
    g = image_grid(images, nrow, upscale=_upscale_for(images.shape[2]))
    fig, ax = plt.subplots(figsize=(g.shape[1] / 80 + 0.4, g.shape[0] / 80 + 0.6))
    ax.imshow(g, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _xy(x: np.ndarray):
    x = np.asarray(x)
    if x.shape[1] == 1:
        return x[:, 0], np.zeros(len(x))
    return x[:, 0], x[:, 1]


def save_scatter(sets: Sequence[np.ndarray], labels: Sequence[str], path: str, title: str = "",
                 panels: bool = False, reference: Optional[np.ndarray] = None) -> None:
    """Scatter plots of 2-D vector data (the first two features of wider data). With panels=True,
    one panel per set, each over the `reference` points in grey; otherwise the sets share one panel,
    over the `reference` points drawn faintly."""
    plt = _plt()
    dim_note = "" if sets[0].shape[1] <= 2 else f" (features 1-2 of {sets[0].shape[1]})"
    if panels:
        n = len(sets)
        fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 3.4), squeeze=False, sharex=True, sharey=True)
        for ax, s, lab in zip(axes[0], sets, labels):
            if reference is not None:
                ax.scatter(*_xy(reference), s=3, c="0.8", label="data")
            ax.scatter(*_xy(s), s=3, c="tab:blue")
            ax.set_title(lab, fontsize=9)
            ax.set_aspect("equal", adjustable="box")
    else:
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        if reference is not None:   # the training data, faint, beneath the sets
            ax.scatter(*_xy(reference), s=3, c="0.55", alpha=0.25, linewidths=0, label="training data")
        colors = ["0.75", "tab:blue", "tab:orange", "tab:green", "tab:red"]
        if reference is not None:
            colors = colors[1:]
        for i, (s, lab) in enumerate(zip(sets, labels)):
            ax.scatter(*_xy(s), s=4, c=colors[i % len(colors)], label=lab)
        ax.legend(fontsize=8, markerscale=3)
        ax.set_aspect("equal", adjustable="datalim")
    fig.suptitle(title + dim_note, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_alpha_sweep(alphas: Sequence[float], distances: Dict[str, Sequence[float]], path: str,
                     title: str = "", rates: Optional[Dict[str, Sequence[float]]] = None,
                     mark: Optional[float] = None) -> None:
    """The diversity-fidelity sweep: distance metrics (e.g. FD, FID; lower is better) against alpha
    in one panel, one axis each, and rates in [0, 1] (precision, recall) in a second panel when
    given. `mark` draws a vertical line at the headline alpha."""
    plt = _plt()
    ncols = 2 if rates else 1
    fig, axes = plt.subplots(1, ncols, figsize=(4.6 * ncols, 3.6), squeeze=False)
    ax = axes[0, 0]
    colors = ["tab:blue", "tab:red", "tab:green", "tab:purple"]
    host, lines = ax, []
    for i, (name, ys) in enumerate(distances.items()):
        a = host if i == 0 else host.twinx()
        if i > 1:
            a.spines["right"].set_position(("axes", 1.0 + 0.18 * (i - 1)))
        lines += a.plot(list(alphas), list(ys), marker="o", color=colors[i % len(colors)], label=name)
        a.set_ylabel(name, color=colors[i % len(colors)])
    host.set_xlabel("alpha (prior std scale)")
    host.set_title("distance to the real data (lower is better)", fontsize=9)
    host.grid(alpha=0.3)
    if mark is not None:
        host.axvline(mark, color="0.6", ls=":", lw=1)
    host.legend(lines, [ln.get_label() for ln in lines], fontsize=8)
    if rates:
        ax = axes[0, 1]
        for name, ys in rates.items():
            ax.plot(list(alphas), list(ys), marker="o", label=name)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("alpha (prior std scale)")
        ax.set_title("precision (fidelity) and recall (coverage)", fontsize=9)
        ax.grid(alpha=0.3)
        if mark is not None:
            ax.axvline(mark, color="0.6", ls=":", lw=1)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
