"""Training logs: console lines, ``metrics.jsonl``, optional TensorBoard, and a loss-curve PNG.

``metrics.jsonl`` has one JSON object per iteration (``iter`` = completed iterations, every
``loss_*``, ``total_loss``, ``lr``, ``time`` in s/iter, ``data_time``); the console gets one line
every ``log_period`` iterations. When a run resumes from iteration ``k`` the lines after ``k``
left by the interrupted run are dropped first, so every iteration appears exactly once.
"""
from __future__ import annotations

import logging
import datetime
import json
import math
from collections import deque
from pathlib import Path
from typing import Any, Optional

from crossvis.errors import CrossVISError

__all__ = ["MetricsLogger", "read_metrics", "plot_loss_curve"]

logger = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is ignored)."""
    records = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Writes metrics of rank 0 (construct it with ``enabled=False`` on other ranks).

    Args:
        output_dir: the run folder (``metrics.jsonl`` and ``tensorboard/`` go there).
        max_iter: total iterations (for the ``iter/max_iter`` display and the ETA).
        log_period: console line every this many iterations (and at the last one).
        start_iter: iterations already done (resume): later records in an existing log are dropped.
        tensorboard: also write TensorBoard scalars; needs the ``tensorboard`` package.
    """

    def __init__(self, output_dir: Path, max_iter: int, log_period: int = 20, start_iter: int = 0,
                 tensorboard: bool = False, enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / "metrics.jsonl"
        self.max_iter = max_iter
        self.log_period = log_period
        self.enabled = enabled
        self._times: deque[float] = deque(maxlen=20)
        self._writer = None
        if not enabled:
            return
        kept = [r for r in read_metrics(self.path) if r.get("iter", 0) <= start_iter] if start_iter else []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        self._file = open(self.path, "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise CrossVISError("runtime.tensorboard is true but the tensorboard package is not installed; "
                                    "pip install tensorboard or set runtime.tensorboard=false") from None
            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=start_iter + 1)

    def log(self, iteration: int, metrics: dict[str, float]) -> None:
        """Record the metrics of completed iteration ``iteration`` (1-based)."""
        if not self.enabled:
            return
        record = {"iter": iteration, **metrics}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if "time" in metrics:
            self._times.append(metrics["time"])
        if self._writer is not None:
            for key, value in metrics.items():
                self._writer.add_scalar(key, value, iteration)
        if iteration % self.log_period == 0 or iteration == self.max_iter:
            logger.info(self.format_line(iteration, metrics), extra={"plain": True})

    def format_line(self, iteration: int, metrics: dict[str, float]) -> str:
        sec = sum(self._times) / len(self._times) if self._times else float("nan")
        eta = "?" if math.isnan(sec) else str(datetime.timedelta(seconds=int(sec * (self.max_iter - iteration))))
        losses = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("loss_"))
        return (f"iter {iteration}/{self.max_iter}  eta {eta}  {losses}  total_loss {metrics['total_loss']:.4f}  "
                f"lr {metrics['lr']:.3g}  {sec:.3f} s/iter")

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def plot_loss_curve(metrics_path: Path, out_path: Path) -> Optional[Path]:
    """Plot every ``loss_*`` and ``total_loss`` against iteration (log-scale y) to a PNG.

    Uses matplotlib's Agg canvas directly (no pyplot, no display). Returns None without records.
    """
    records = read_metrics(metrics_path)
    if not records:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in records[-1] if k.startswith("loss_")] + ["total_loss"]
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    iters = [r["iter"] for r in records]
    for key in keys:
        values = [r.get(key, float("nan")) for r in records]
        ax.plot(iters, values, label=key, linewidth=2.0 if key == "total_loss" else 1.0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if all(v > 0 for r in records for k, v in r.items() if k in keys):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path)
    return Path(out_path)
