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

# one fresh process (the setting is process-wide): first opted out, then applied
SCRIPT = r"""
import json, os, resource, torch
import crossvis.inference.allocator as allocator

def faults_per_frame():
    # 40 MiB written at every frame: above the largest threshold glibc's own dynamic rule reaches
    # (32 MiB), so by default it is a fresh mapping every time
    for _ in range(8):   # glibc reaches its steady state after a few frames
        torch.ones(10 << 20).sum()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(10 << 20).sum()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5

os.environ["CROSSVIS_KEEP_FREED_MEMORY"] = "0"
opted_out = allocator.keep_freed_memory()
default = faults_per_frame()
allocator._applied = None   # forget the opt-out, as a new process would
del os.environ["CROSSVIS_KEEP_FREED_MEMORY"]
applied = allocator.keep_freed_memory()
print(json.dumps({"opted_out": opted_out, "default": default, "applied": applied,
                  "again": allocator.keep_freed_memory(), "kept": faults_per_frame()}))
"""


def test_freed_blocks_are_reused_without_page_faults_unless_opted_out():
    env = {k: v for k, v in os.environ.items() if k != "CROSSVIS_KEEP_FREED_MEMORY"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["opted_out"] is False          # CROSSVIS_KEEP_FREED_MEMORY=0: allocator as it was
    assert result["default"] > 5000              # 40 MiB of fresh pages: ~10,000 faults per frame
    assert result["applied"] and result["again"]
    assert result["kept"] < 0.05 * result["default"]
