"""Peak memory of one online-inference process per model (360×640 frames, random weights).

Each configuration runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own. Reported:
RSS after building the model, peak RSS after ``--frames`` frames, their difference (activations and
post-processing), and the tracemalloc peak (Python-level allocations only: frames, RLE strings,
result lists; tensor memory is not visible to tracemalloc).

    python benchmarks/bench_memory.py [--arch r50,r101,dla34] [--frames 10] [--threads 2] [--detections 100]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, tracemalloc, torch
sys.path.insert(0, sys.argv[6])
import benchlib as bench
from crossvis.deploy.convert import official_recipe
from crossvis.inference.fast import FastInference
from crossvis.inference.predictor import OnlinePredictor, build_tracker
name, fast, frames, threads, dets = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
data = bench.synthetic_frames(frames)
if name.startswith("torchvision-"):
    model = bench.torchvision_detector(name.split("-", 1)[1], dets)
    after_build = bench.current_rss_mib()
    tracemalloc.start()
    for f in data:
        with torch.inference_mode():
            model([torch.from_numpy(f).permute(2, 0, 1).float() / 255.0])
else:
    arch = name.split("-", 1)[1]
    model = bench.crossvis_model(arch, dets)
    predictor = OnlinePredictor(model, build_tracker(official_recipe(arch)), device="cpu",
                                runner=FastInference(model) if fast else None)
    after_build = bench.current_rss_mib()
    tracemalloc.start()
    for _ in predictor.track(data):
        pass
peak_py = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({"model": name, "fast": fast, "rss_after_build_mib": after_build,
                  "peak_rss_mib": bench.peak_rss_mib(), "tracemalloc_peak_mib": peak_py}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="r50,r101,dla34")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--detections", type=int, default=100)
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    configs = [] if args.no_baselines else [("torchvision-fcos", False), ("torchvision-maskrcnn", False)]
    configs += [(f"crossvis-{a}", fast) for a in args.arch.split(",") for fast in (False, True)]
    print(f"{'model':<24}{'path':<6}{'after build MiB':>16}{'peak RSS MiB':>14}{'delta':>8}{'tracemalloc MiB':>17}")
    for name, fast in configs:
        out = subprocess.run([sys.executable, "-c", CHILD, name, "1" if fast else "0", str(args.frames),
                              str(args.threads), str(args.detections),
                              os.path.dirname(os.path.abspath(__file__))], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{name:<24}{'fast' if fast else 'fp32':<6}{r['rss_after_build_mib']:>16.0f}{r['peak_rss_mib']:>14.0f}"
              f"{r['peak_rss_mib'] - r['rss_after_build_mib']:>8.0f}{r['tracemalloc_peak_mib']:>17.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
