"""lcm_core's step() against diffusers' on the CPU: LCMScheduler and TCDScheduler.

Paired and alternating in one process: each round times one call of each (in turn
order swapped every round), after a warm-up; reports the medians, the median of the
per-round ratios (the gated figure) and the ratio of the medians.
Both schedulers run the same schedule, model output, sample and generator seed; the
step index is reset so every call is the first, noisy, step at t = 999 (TCD at eta 0.3).

    python benchmarks/bench_step.py [--scheduler lcm|tcd|all] [--shape 1 4 128 128] [--rounds 400] [--max-ratio 0.8]

Prints one JSON object per scheduler; exits 1 when a ratio is above --max-ratio (so `make bench`
can gate on it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import diffusers  # noqa: E402  (the reference, for comparison only)

import lcm_core  # noqa: E402

# scheduler -> (class name in both packages, step() keyword arguments)
SCHEDULERS = {"lcm": ("LCMScheduler", {}), "tcd": ("TCDScheduler", {"eta": 0.3})}


def bench(kind: str, args: argparse.Namespace) -> dict:
    class_name, step_options = SCHEDULERS[kind]
    shape = tuple(args.shape)
    model_output = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sample = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ours, reference = getattr(lcm_core, class_name)(), getattr(diffusers, class_name)()
    ours.set_timesteps(args.steps)
    reference.set_timesteps(args.steps)
    ours_generator, reference_generator = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)

    def run_ours() -> torch.Tensor:
        ours.set_begin_index(0)
        ours._step_index = None  # every call is the first step
        return ours.step(model_output, ours.timesteps[0], sample, generator=ours_generator,
                         **step_options).prev_sample

    def run_reference() -> torch.Tensor:
        reference._step_index = None
        return reference.step(model_output, reference.timesteps[0], sample, generator=reference_generator,
                              **step_options).prev_sample

    # Same inputs, same seed: the outputs agree before anything is timed.
    ours_generator.manual_seed(0)
    reference_generator.manual_seed(0)
    difference = (run_ours() - run_reference()).abs().max().item()

    timings = {"lcm_core": [], "diffusers": []}
    runs = [("lcm_core", run_ours), ("diffusers", run_reference)]
    for _ in range(args.warmup):
        for _, run in runs:
            run()
    for round_index in range(args.rounds):
        order = runs if round_index % 2 == 0 else runs[::-1]
        for name, run in order:
            start = time.perf_counter()
            run()
            timings[name].append(time.perf_counter() - start)

    medians = {name: statistics.median(values) * 1e3 for name, values in timings.items()}
    # Median of the per-round ratios (each round times both back to back): robust to drifts in load.
    ratio = statistics.median(a / b for a, b in zip(timings["lcm_core"], timings["diffusers"]))
    return {
        "benchmark": "step", "scheduler": class_name, "step_options": step_options, "shape": list(shape),
        "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads(), "rounds": args.rounds,
        "median_ms": {name: round(value, 4) for name, value in medians.items()},
        "ratio": round(ratio, 3), "ratio_of_medians": round(medians["lcm_core"] / medians["diffusers"], 3),
        "max_ratio": args.max_ratio, "max_abs_difference": difference,
        "torch": torch.__version__, "diffusers": diffusers.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduler", choices=[*SCHEDULERS, "all"], default="all")
    parser.add_argument("--shape", type=int, nargs="+", default=[1, 4, 128, 128])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-ratio", type=float, default=0.8)
    args = parser.parse_args()

    over_budget = False
    for kind in SCHEDULERS if args.scheduler == "all" else [args.scheduler]:
        result = bench(kind, args)
        print(json.dumps(result, indent=2))
        over_budget |= result["ratio"] > args.max_ratio
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
