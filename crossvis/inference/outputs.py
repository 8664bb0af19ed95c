"""Output protection for the commands that write files: never replace what this run did not create.

Rules (docs/training.md, "Output folders"):

* a single-file output (``convert-checkpoint DST``, ``export --output FILE``) that already exists
  is refused unless ``force``; an output that *is* one of the inputs (same file by any path
  spelling or link) is always refused (:func:`check_output_file`);
* a folder output (``eval``, ``demo``) is owned through a manifest, ``OUT/.crossvis-outputs.json``,
  written *before* anything else: it lists the fixed file names and the sub-folders the command
  fills. A later run of the same command first deletes exactly what the manifest lists (so no
  stale frame of a longer earlier clip stays beside the new ones), then writes. Files the
  manifest does not list are never touched, and when one of the names the command is about to
  write exists without a manifest claiming it, the command is refused unless ``force``
  (:class:`OutputFolder`).

This module does not import torch.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence, Union

from crossvis.atomic import atomic_write_json, remove_stale_temporaries
from crossvis.errors import CrossVISError

__all__ = ["MANIFEST", "OutputFolder", "check_output_file", "same_file", "check_not_a_file"]

logger = logging.getLogger(__name__)

#: The manifest a folder-writing command leaves in its output folder.
MANIFEST = ".crossvis-outputs.json"

PathLike = Union[str, "os.PathLike[str]"]


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (symlinks, ``..``, hard links and case included)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_not_a_file(folder: PathLike, flag: str = "--output") -> None:
    """A CrossVISError when ``folder`` exists and is not a folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CrossVISError(f"{flag} {folder} is an existing file, not a folder; give a folder path "
                            f"(it is created when missing)")


def check_output_file(path: PathLike, inputs: Iterable[PathLike] = (), force: bool = False,
                      flag: str = "--force") -> None:
    """Refuse to write ``path`` when it is one of ``inputs`` (always) or exists (unless ``force``).

    Raises:
        CrossVISError: naming the file and what to do.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise CrossVISError(f"output {path} is the input {source}; writing it would destroy the input, "
                                f"choose another output path")
    if path.is_dir():
        raise CrossVISError(f"output {path} is an existing folder; give a file path")
    if (path.exists() or path.is_symlink()) and not force:
        raise CrossVISError(f"output {path} already exists; pass {flag} to replace it, or choose another path")


class OutputFolder:
    """The output folder of one command run, claimed through :data:`MANIFEST`.

    Args:
        root: the folder (created when missing).
        command: the verb that owns it (``"eval"``, ``"demo"``); a manifest of another verb is
            not this command's to clear.
        files: fixed file names (relative to ``root``) the command may write.
        folders: sub-folders (relative) whose whole content the command writes.
        force: replace those names even when no manifest of this command claims them.

    :meth:`prepare` checks, clears this command's previous outputs and writes the manifest.
    """

    def __init__(self, root: PathLike, command: str, files: Sequence[str] = (), folders: Sequence[str] = (),
                 force: bool = False) -> None:
        self.root = Path(root)
        self.command = command
        self.files = list(files)
        self.folders = list(folders)
        self.force = force

    def prepare(self) -> Path:
        """Check the folder, delete what an earlier run of this command listed, write the manifest.

        Returns:
            ``root``.

        Raises:
            CrossVISError: ``root`` is a file, or it holds one of the output names that no
            manifest of this command claims and ``force`` is off.
        """
        check_not_a_file(self.root)
        previous = self._previous_claim()
        if previous is not None:
            self._clear(previous["files"], previous["folders"])
            remove_stale_temporaries(self.root)
        clashes = [name for name in self.files if (self.root / name).exists() or (self.root / name).is_symlink()]
        clashes += [f"{name}/" for name in self.folders
                    if (self.root / name).is_dir() and any((self.root / name).iterdir())]
        clashes += [name for name in self.folders if (self.root / name).exists() and not (self.root / name).is_dir()]
        if clashes and not self.force:
            shown = ", ".join(clashes[:4]) + (f" and {len(clashes) - 4} more" if len(clashes) > 4 else "")
            raise CrossVISError(f"{self.root} already holds {shown}, not written by an earlier `crossvis "
                                f"{self.command}` there; pass --force to replace them, or choose another --output")
        if clashes:
            self._clear(self.files, self.folders)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / MANIFEST, {"command": self.command, "files": self.files,
                                                  "folders": self.folders}, indent=1)
        return self.root

    def _previous_claim(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            claim = json.loads(path.read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            logger.warning("ignoring the unreadable %s", path)
            return None
        if not isinstance(claim, dict) or claim.get("command") != self.command:
            return None
        files = [f for f in claim.get("files", []) if isinstance(f, str)]
        folders = [f for f in claim.get("folders", []) if isinstance(f, str)]
        return {"files": files, "folders": folders}

    def _inside(self, name: str) -> Path | None:
        """``root / name`` when it stays inside ``root`` (a manifest cannot point elsewhere)."""
        target = self.root / name
        try:
            target.parent.resolve().relative_to(self.root.resolve())
        except ValueError:
            return None
        if target.resolve() == self.root.resolve() or name.startswith(("/", "..")):
            return None
        return target

    def _clear(self, files: Iterable[str], folders: Iterable[str]) -> None:
        for name in files:
            target = self._inside(name)
            if target is not None and (target.is_file() or target.is_symlink()):
                target.unlink()
        for name in folders:
            target = self._inside(name)
            if target is None:
                continue
            if target.is_symlink() or target.is_file():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target)
