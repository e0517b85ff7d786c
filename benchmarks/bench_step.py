"""lcm_core's step() against diffusers' on the CPU, at every step index: LCMScheduler and TCDScheduler.

Paired and alternating in one process: each round times, for every step index of the
schedule in turn, one call of each scheduler (their order swapped every round), after a
warm-up. For each step index it reports the medians, the median of the per-round ratios
(the gated figure) and the ratio of the medians; the gate is the worst step index.
Both schedulers run the same schedule, model output, sample and generator seed. Before a
call both step indices are set to the one timed, as they stand during a run; the first
call of a real run also locates its timestep, which neither does here (the stricter measure).
TCD runs at eta 0.3, so every step but the last draws noise.

    python benchmarks/bench_step.py [--scheduler lcm|tcd|all] [--shape 1 4 128 128] [--steps 4]
                                    [--rounds 400] [--max-ratio 0.8]

Prints one JSON object per scheduler; exits 1 when the ratio at any step index is above
--max-ratio (so `make bench` can gate on it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import diffusers  # noqa: E402  (the reference, for comparison only)

import lcm_core  # noqa: E402

# scheduler -> (class name in both packages, step() keyword arguments)
SCHEDULERS = {"lcm": ("LCMScheduler", {}), "tcd": ("TCDScheduler", {"eta": 0.3})}

# One step at a step index; returns the step's prev_sample.
StepAt = Callable[[int], torch.Tensor]


def time_step_indices(ours: StepAt, reference: StepAt, step_count: int, rounds: int, warmup: int,
                      reseed: Callable[[], None]) -> List[Dict[str, Any]]:
    """Paired, alternating timings of ``ours`` against ``reference`` at each of ``step_count`` step indices.

    Any scheduler fits: ``ours(i)`` and ``reference(i)`` run step index i (setting whatever
    state that needs), and ``reseed()`` puts both noise generators back to the same seed.
    First the two outputs are compared at every index (after a ``reseed``); then each round
    times one call of each at every index, the first of the pair alternating between rounds.
    Returns one row per step index: medians in ms, the median of the per-round ratios
    (robust to drifts in load: each pair runs back to back), the ratio of the medians and
    the largest absolute difference of the outputs.
    """
    differences = []
    for index in range(step_count):
        reseed()
        differences.append((ours(index) - reference(index)).abs().max().item())

    pairs = [("lcm_core", ours), ("diffusers", reference)]
    for _ in range(warmup):
        for index in range(step_count):
            for _, run in pairs:
                run(index)
    timings = [{"lcm_core": [], "diffusers": []} for _ in range(step_count)]
    for round_index in range(rounds):
        order = pairs if round_index % 2 == 0 else pairs[::-1]
        for index in range(step_count):
            for name, run in order:
                start = time.perf_counter()
                run(index)
                timings[index][name].append(time.perf_counter() - start)

    rows = []
    for index, (times, difference) in enumerate(zip(timings, differences)):
        medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        ratio = statistics.median(a / b for a, b in zip(times["lcm_core"], times["diffusers"]))
        rows.append({
            "step_index": index,
            "median_ms": {name: round(value, 4) for name, value in medians.items()},
            "ratio": round(ratio, 3),
            "ratio_of_medians": round(medians["lcm_core"] / medians["diffusers"], 3),
            "max_abs_difference": difference,
        })
    return rows


def gated_result(rows: List[Dict[str, Any]], max_ratio: float, **fields: Any) -> Dict[str, Any]:
    """The JSON object of one scheduler: ``fields``, the rows, and the worst step index (the gated one)."""
    worst = max(rows, key=lambda row: row["ratio"])
    return {
        **fields, "device": "cpu", "threads": torch.get_num_threads(),
        "ratio": worst["ratio"], "worst_step_index": worst["step_index"], "max_ratio": max_ratio,
        "max_abs_difference": max(row["max_abs_difference"] for row in rows),
        "per_step_index": rows, "torch": torch.__version__, "diffusers": diffusers.__version__,
    }


def bench(kind: str, args: argparse.Namespace) -> dict:
    class_name, step_options = SCHEDULERS[kind]
    shape = tuple(args.shape)
    model_output = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    sample = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    ours, reference = getattr(lcm_core, class_name)(), getattr(diffusers, class_name)()
    ours.set_timesteps(args.steps)
    reference.set_timesteps(args.steps)
    generators = {ours: torch.Generator().manual_seed(0), reference: torch.Generator().manual_seed(0)}

    def step_at(scheduler: Any) -> StepAt:
        generator = generators[scheduler]
        timesteps = list(scheduler.timesteps)  # indexed once, outside the timed calls

        def run(index: int) -> torch.Tensor:
            scheduler._step_index = index  # both read it as the step they are at
            return scheduler.step(model_output, timesteps[index], sample, generator=generator,
                                  **step_options).prev_sample
        return run

    def reseed() -> None:
        for generator in generators.values():
            generator.manual_seed(0)

    rows = time_step_indices(step_at(ours), step_at(reference), len(ours.timesteps), args.rounds, args.warmup,
                             reseed)
    for row, timestep in zip(rows, ours.timesteps.tolist()):
        row["timestep"] = timestep
    return gated_result(rows, args.max_ratio, benchmark="step", scheduler=class_name, step_options=step_options,
                        shape=list(shape), dtype="float32", rounds=args.rounds)


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
