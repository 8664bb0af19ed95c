"""Training checkpoints of a run folder: keep-last-K rotation and the resume pointer.

A training checkpoint ``DIR/checkpoints/model_{iter:07d}.pth`` is a dict::

    {"model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... (AMP only),
     "iteration": int (completed iterations), "recipe": plain dict (resolved),
     "rng": {"python", "numpy", "torch", "cuda"?}, "sampler": {...}}

``DIR/checkpoints/last_checkpoint`` holds the file name of the newest one. Every file is written
with :func:`crossvis.atomic.atomic_write`, so a crash never leaves a truncated checkpoint or
pointer behind (a killed save leaves a ``.NAME.*.tmp`` file, removed when the run is resumed).
A checkpoint that cannot be read when resuming (truncated or altered by something else) is
renamed ``NAME.broken`` by :meth:`Checkpointer.set_aside`, never deleted, and the next older one
is used.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from crossvis.atomic import atomic_write_text
from crossvis.checkpoints import atomic_save

__all__ = ["Checkpointer", "POINTER"]

POINTER = "last_checkpoint"
_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")


class Checkpointer:
    """Saves and finds training checkpoints in ``directory``.

    Args:
        directory: where ``model_{iter:07d}.pth``, ``model_final.pth`` and ``last_checkpoint`` live.
        keep_last: how many periodic checkpoints to keep (older ones are deleted after a save;
            ``model_final.pth`` is never deleted).
    """

    def __init__(self, directory: Union[str, Path], keep_last: int = 3) -> None:
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(self, name: str, state: Mapping[str, Any]) -> Path:
        """Write ``state`` as ``name`` (e.g. ``model_0001900.pth``), update the pointer, rotate."""
        path = self.directory / name
        atomic_save(dict(state), path)
        atomic_write_text(self.directory / POINTER, name + "\n")
        self._rotate()
        return path

    @staticmethod
    def periodic_name(iteration: int) -> str:
        return f"model_{iteration:07d}.pth"

    def _rotate(self) -> None:
        periodic = sorted(p for p in self.directory.iterdir() if _PERIODIC.match(p.name))
        for old in periodic[:-self.keep_last]:
            old.unlink(missing_ok=True)

    def candidates(self) -> list[Path]:
        """The checkpoints a resume may start from, best first: the one ``last_checkpoint`` names,
        ``model_final.pth``, then the periodic ones from the newest iteration down."""
        ordered: list[Path] = []
        pointer = self.directory / POINTER
        if pointer.is_file():
            try:
                ordered.append(self.directory / pointer.read_text().strip())
            except (OSError, UnicodeDecodeError):
                pass
        ordered.append(self.directory / "model_final.pth")
        if self.directory.is_dir():
            ordered += sorted((p for p in self.directory.iterdir() if _PERIODIC.match(p.name)), reverse=True)
        unique: list[Path] = []
        for path in ordered:
            if path.is_file() and path.parent == self.directory and path not in unique:
                unique.append(path)
        return unique

    def set_aside(self, path: Path) -> Path:
        """Rename an unreadable checkpoint to ``NAME.broken`` (``NAME.broken.1``, ... when taken); return it."""
        target = path.with_name(path.name + ".broken")
        number = 0
        while target.exists():
            number += 1
            target = path.with_name(f"{path.name}.broken.{number}")
        try:
            path.rename(target)
        except FileNotFoundError:  # another process set it aside first
            pass
        return target

    def point_to(self, path: Path) -> None:
        """Make ``last_checkpoint`` name ``path`` (after a resume fell back to it)."""
        atomic_write_text(self.directory / POINTER, path.name + "\n")

    def latest(self) -> Optional[Path]:
        """The checkpoint named by ``last_checkpoint``, else the newest periodic one, else None."""
        pointer = self.directory / POINTER
        if pointer.is_file():
            candidate = self.directory / pointer.read_text().strip()
            if candidate.is_file():
                return candidate
        periodic = sorted(p for p in self.directory.glob("model_*.pth") if _PERIODIC.match(p.name))
        return periodic[-1] if periodic else None
