"""The loss curve of a run, as a PNG (with matplotlib, when it is installed)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rnnspec.train.rundir import write_atomic


def plot_losses(
    path: Path, losses: Sequence[float], val_loss: float | None, title: str
) -> bool:
    """Write the loss curve as a PNG (matplotlib's Agg backend); False without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed; no {path.name}", file=sys.stderr)
        return False
    steps = range(1, len(losses) + 1)
    window = max(1, len(losses) // 30)
    smooth = [mean(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
    ax.plot(steps, smooth, color="tab:blue", label=f"train ({window}-step mean)")
    if val_loss is not None:
        ax.scatter([len(losses)], [val_loss], color="tab:red", zorder=3)
        ax.annotate(
            f"validation {val_loss:.3f}",
            (len(losses), val_loss),
            textcoords="offset points",
            xytext=(-10, 10),
            ha="right",
            color="tab:red",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{title}: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        write_atomic(path, lambda handle: fig.savefig(handle, format="png"))
    finally:
        plt.close(fig)
    return True


def mean(values: Sequence[float]) -> float:
    """The mean of `values` (NaN when there are none)."""
    return sum(values) / len(values) if values else float("nan")
