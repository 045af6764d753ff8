"""A matplotlib (Agg) figure without pyplot's global state, and its base64 PNG for the reports."""

from __future__ import annotations

import base64
import io
from typing import Any


def figure(title: str, xlabel: str, ylabel: str, size: tuple[float, float] = (6.4, 3.4)) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless; leaves an explicitly chosen backend alone
    from matplotlib.figure import Figure  # no pyplot: no global figure state across tests

    fig = Figure(figsize=size, dpi=90, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")
