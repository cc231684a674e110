"""Learning-curve figures from the Trainer's JSONL metrics (one line per chunk, one value per seed)."""
from __future__ import annotations

import os

import numpy as np


def save_figure_atomic(fig, path: str, dpi: int = 110) -> str:
  """Save a matplotlib figure as PNG through a temporary file and a rename (an interrupted run never leaves half a
  figure), then close it. Returns path."""
  import matplotlib.pyplot as plt

  tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp_" + os.path.basename(path))
  fig.savefig(tmp, dpi=dpi, format="png")
  plt.close(fig)
  os.replace(tmp, path)
  return path


def read_metrics(path: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """steps [C] and {metric: values [C, num_seeds]} from a metrics_<stage>.jsonl file (non-finite values as NaN)."""
  from common.metrics_file import read_records

  steps, metrics = [], {}
  for record in read_records(path, note=False):  # a partial last line (a run stopped mid-write) is left out
    steps.append(record["step"])
    for name, values in record["metrics"].items():
      metrics.setdefault(name, []).append(np.atleast_1d(np.asarray(values, np.float64)))  # "nan" strings -> nan
  return np.asarray(steps), {name: np.stack(v) for name, v in metrics.items()}


def plot_learning_curves(path: str, out_png: str | None = None, title: str | None = None) -> str:
  """One panel per metric: the per-seed curves and their mean. Returns the PNG path."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps, metrics = read_metrics(path)
  if not metrics:
    raise ValueError(f"no metrics in {path}")
  fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
  for ax, (name, values) in zip(axes[0], metrics.items()):
    ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8)
    ax.plot(steps, values.mean(axis=1), color="tab:blue", linewidth=1.8, label=f"mean of {values.shape[1]} seeds")
    ax.set_title(name)
    ax.set_xlabel("step")
  axes[0][0].legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  out_png = out_png or os.path.splitext(path)[0] + ".png"
  return save_figure_atomic(fig, out_png)
