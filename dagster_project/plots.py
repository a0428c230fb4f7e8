"""Small charts for asset pages: PNG images embedded in Markdown metadata (the Dagster UI
renders them on the asset's page). Without matplotlib the metadata simply has no image."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import dagster as dg


def _figure():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display; safe in the daemon's run workers
        import matplotlib.pyplot as plt
    except ImportError:
        return None, None
    fig, ax = plt.subplots(figsize=(5.5, 3), dpi=90)
    return plt, (fig, ax)


def _markdown(plt, fig, title: str) -> dg.MetadataValue:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def grouped_bars(title: str, groups: Mapping[str, Mapping[str, float]],
                 ylabel: str = "") -> dg.MetadataValue | None:
    """Bars of several series (e.g. model, baseline) over the same metrics."""
    plt, made = _figure()
    if made is None:
        return None
    fig, ax = made
    metrics = list(next(iter(groups.values())).keys()) if groups else []
    width = 0.8 / max(len(groups), 1)
    for i, (series, values) in enumerate(groups.items()):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [values.get(m, 0.0) for m in metrics], width, label=series)
    ax.set_xticks([j + width * (len(groups) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend()
    return _markdown(plt, fig, title)


def histogram(title: str, values: Sequence[float], xlabel: str) -> dg.MetadataValue | None:
    plt, made = _figure()
    if made is None or not values:
        return None
    fig, ax = made
    ax.hist(values, bins=20, color="#4f6fb3")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("people")
    return _markdown(plt, fig, title)
