"""PNG charts (matplotlib, from the optional ``bench`` extra; imported lazily with a clear message)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed, no PNG written: pip install 'edge-agent[bench]'")
        return None
    return plt


def confusion_png(path: Path, cm: npt.NDArray[np.int64], labels: Sequence[str], title: str) -> bool:
    plt = _pyplot()
    if plt is None:
        return False
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, np.float64), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.75 * len(labels), 1.0 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pr_png(path: Path, curves: Mapping[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float]],
           title: str, points: Mapping[str, tuple[float, float]] | None = None, step: bool = False) -> bool:
    """curves: name -> (recall, precision, ap); points: name -> (recall, precision) marked on the plot;
    step: draw each curve as the step function average precision integrates."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, (rec, prec, ap) in curves.items():
        if step:
            ax.step(np.r_[0.0, rec], np.r_[prec[:1], prec], where="pre", label=f"{name} AP {100 * ap:.1f}")
        else:
            ax.plot(rec, prec, label=f"{name} AP {100 * ap:.1f}")
    for name, (r, p) in (points or {}).items():
        ax.plot([r], [p], "o", color="black", label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
