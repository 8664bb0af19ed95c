"""``crossvis.formats`` and ``crossvis.eval`` load without torch (a fresh interpreter is the point)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["crossvis.formats", "crossvis.eval"])
def test_import_does_not_load_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
