"""crossvis.inference.allocator: after keep_freed_memory(), a large block freed and allocated again
at every "frame" no longer page-faults (glibc); the opt-out leaves the allocator alone."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc malloc only")

SCRIPT = r"""
import json, resource, torch
from crossvis.inference.allocator import keep_freed_memory

def faults_per_frame():
    # 40 MiB written at every frame: above the largest threshold glibc's own dynamic rule reaches
    # (32 MiB), so by default it is a fresh mapping every time
    for _ in range(8):   # glibc reaches its steady state after a few frames
        torch.ones(10 << 20).sum()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(10 << 20).sum()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

before = faults_per_frame()
applied = keep_freed_memory()
after = faults_per_frame()
print(json.dumps({"before": before, "applied": applied, "again": keep_freed_memory(), "after": after}))
"""


def _run(**env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_freed_blocks_are_reused_without_page_faults():
    result = _run()
    assert result["applied"] and result["again"]
    assert result["before"] > 5000          # 40 MiB of fresh pages: ~10,000 faults per frame
    assert result["after"] < 0.05 * result["before"]


def test_the_environment_variable_leaves_the_allocator_alone():
    result = _run(CROSSVIS_KEEP_FREED_MEMORY="0")
    assert not result["applied"] and result["after"] > 0.5 * result["before"]
