"""Shared test set-up.

* ``tests/helpers`` (fixtures and toy models used by several test folders) is importable;
* ``official_keys``: the official CrossVIS state-dict key lists (``../shared`` or the vendored copy).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

import os
import tempfile

HELPERS = Path(__file__).parent / "helpers"
# the fast path's per-machine choice cache goes to a throw-away folder, not the user's ~/.cache
os.environ["CROSSVIS_CACHE_DIR"] = tempfile.mkdtemp(prefix="crossvis-test-cache-")
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

OFFICIAL_KEYS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "official-checkpoint-keys"
#: the same files, vendored for the checkpoint-converter tests (used when ../shared is absent)
VENDORED_KEYS_DIR = Path(__file__).resolve().parent / "deploy" / "fixtures"


def _parse_key_file(path: Path) -> dict[str, tuple[int, ...]]:
    """``name (d0, d1, ...) dtype`` lines -> {name: shape}; summary lines are skipped."""
    shapes = {}
    for line in path.read_text().splitlines():
        if "(" not in line or line.startswith(("NUM_KEYS", "PARAMS")):
            continue
        name, rest = line.split(" ", 1)
        dims = rest[rest.index("(") + 1:rest.index(")")]
        shapes[name] = tuple(int(d) for d in dims.replace(",", " ").split())
    return shapes


@pytest.fixture(scope="session")
def official_keys() -> Callable[[str], dict[str, tuple[int, ...]]]:
    """``official_keys("r50" | "r101" | "dla")`` -> every official state-dict key and its shape."""
    def load(which: str) -> dict[str, tuple[int, ...]]:
        name = f"crossvis_{which}_state_dict.txt"
        path = OFFICIAL_KEYS_DIR / name
        if not path.is_file():
            path = VENDORED_KEYS_DIR / name
        if not path.is_file():
            pytest.skip(f"official key list {path} is not available")
        return _parse_key_file(path)
    return load


@pytest.fixture(autouse=True)
def _fresh_cli_logging():
    """Each test starts without the console handler an earlier in-process ``crossvis.cli.main`` installed."""
    import logging

    yield
    logger = logging.getLogger("crossvis")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


#: the README's claims and the tests that back them; the summary says how each fared in this run
CLAIMS = {
    "equal to the official evaluator (mmdet 3.3.0 YTVISeval)": "tests/eval/test_official_ytviseval.py",
    "DDP equals one process (torch.distributed.run)": "tests/training/test_distributed.py",
    "exact resume after SIGKILL": "tests/training/test_resume_cli.py",
}


def pytest_terminal_summary(terminalreporter):
    stats = terminalreporter.stats
    for claim, path in CLAIMS.items():
        counts = {kind: sum(1 for r in stats.get(kind, []) if getattr(r, "nodeid", "").startswith(path))
                  for kind in ("passed", "failed", "skipped", "error")}
        if any(counts.values()):
            terminalreporter.write_line(
                f"claim checked: {claim}: {counts['passed']} tests passed, {counts['failed'] + counts['error']} "
                f"failed, {counts['skipped']} skipped ({path})")
