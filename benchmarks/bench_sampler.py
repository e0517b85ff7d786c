"""The pack's samplers against a baseline sampler, in a real ComfyUI, on the CPU.

`--sampler lcm`: LCMSampler against ComfyUI's built-in `lcm` sampler; `--sampler tcd`:
TCDSampler (gamma 0.3) against the pack's LCMSampler; `--sampler flow`: LCMSampler on a flow
model (the tests' tiny SD3, as ComfyUI's own SD3 class; diffusers' FlowMatchLCMScheduler step)
against the built-in `lcm` on the same model. Each pair runs through
comfy.sample.sample_custom on the same model (a tiny SD1.5-style UNet, or that SD3), the same
sigmas and the same seed; rounds alternate (order swapped every round) after a warm-up; the medians, the median of
the per-round ratios (the gated figure) and the ratio of the medians are reported. The ratio
is what matters: the UNet is the same in both, so it measures the sampler's own overhead
(plan, step maths, the CPU noise stream).

    LCM_COMFYUI=<tree> python benchmarks/bench_sampler.py [--sampler lcm|tcd|flow|all] [--rounds 40] [--latent 64]
        [--flow-latent 128]
        [--max-ratio 1.02]

Prints one JSON object per comparison; exits 1 when a ratio is above --max-ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import comfy_host  # noqa: E402

GAMMA = 0.3


@dataclasses.dataclass(frozen=True)
class Case:
    """A model with what a sampler needs for it: its latent and CONDITIONING."""

    model: Any
    latent: Any
    conditioning: list


def sd15_case(model: Any, args: argparse.Namespace) -> Case:
    import torch

    embeds = torch.randn(1, 7, comfy_host.TINY_UNET_DIFFUSERS["cross_attention_dim"],
                         generator=torch.Generator().manual_seed(0))
    return Case(model, torch.zeros(1, 4, args.latent, args.latent), [[embeds, {}]])


def flow_case(args: argparse.Namespace) -> Case:
    """The tests' tiny SD3 (tests/flow_models.py), 16 latent channels at --flow-latent.

    Its transformer (2.3M parameters) costs far less per step than the SD1.5-style UNet at the
    same size, so at 64x64 both samplers' own fixed costs (the noise draws) are a visible share
    of a run; 128x128 (a 1024x1024 image) gives it a model cost like the UNet's.
    """
    import torch

    import flow_models

    pair = flow_models.sd3_pair(seed=0)
    positive, _ = flow_models.comfy_conditioning("sd3", flow_models.prompt("sd3"))
    return Case(pair.model, torch.zeros(1, 16, args.flow_latent, args.flow_latent), positive)


def compare(name: str, baseline: str, samplers: dict, sigmas, args: argparse.Namespace, case: Case, comfy) -> dict:
    """Time ``samplers[name]`` against ``samplers[baseline]`` in alternating rounds."""
    import torch

    noise = comfy.sample.prepare_noise(case.latent, 0)

    def run(sampler):
        return comfy.sample.sample_custom(case.model, noise, 1.0, sampler, sigmas, case.conditioning,
                                          case.conditioning, case.latent, disable_pbar=True, seed=0)

    names = [name, baseline]
    for _ in range(args.warmup):
        for each in names:
            run(samplers[each])
    timings = {each: [] for each in names}
    for round_index in range(args.rounds):
        for each in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            run(samplers[each])
            timings[each].append(time.perf_counter() - start)
    medians = {each: statistics.median(values) for each, values in timings.items()}
    # Each round timed both back to back: the median of the per-round ratios cancels slow
    # drifts in machine load that the ratio of the two medians still feels.
    ratio = statistics.median(a / b for a, b in zip(timings[name], timings[baseline]))
    return {
        "benchmark": "sampler", "sampler": name, "baseline": baseline,
        "model": type(case.model.model).__name__, "latent": list(case.latent.shape), "steps": args.steps,
        "device": "cpu",
        "threads": torch.get_num_threads(), "rounds": args.rounds,
        "median_s": {each: round(value, 4) for each, value in medians.items()},
        "ratio": round(ratio, 4), "ratio_of_medians": round(medians[name] / medians[baseline], 4),
        "max_ratio": args.max_ratio, "torch": torch.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sampler", choices=["lcm", "tcd", "flow", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--latent", type=int, default=64, help="latent height and width (64 = a 512x512 image)")
    parser.add_argument("--flow-latent", type=int, default=128, help="the same for --sampler flow's SD3")
    parser.add_argument("--max-ratio", type=float, default=1.02)
    args = parser.parse_args()

    comfy = comfy_host.import_comfy()
    pack = comfy_host.import_pack()
    _, model = comfy_host.tiny_unet_pair(seed=0)
    config = comfy_host.lcm_config(pack.nodes, model)
    samplers = {
        "LCMSampler": pack.nodes.LCMSampler().get_sampler(config)[0],
        "TCDSampler": pack.nodes.TCDSampler().get_sampler(config, GAMMA)[0],
        "builtin_lcm": comfy.samplers.sampler_object("lcm"),
    }
    comparisons = {"lcm": ("LCMSampler", "builtin_lcm", "lcm"), "tcd": ("TCDSampler", "LCMSampler", "tcd"),
                   "flow": ("LCMSampler", "builtin_lcm", "flow")}
    over_budget = False
    for kind in comparisons if args.sampler == "all" else [args.sampler]:
        name, baseline, scheduler = comparisons[kind]
        if scheduler == "flow":
            case = flow_case(args)
            sigmas, _ = pack.nodes.FlowMatchLCMTimesteps().get_sigmas(case.model, args.steps, 1.0)
        else:
            case = sd15_case(model, args)
            # The same sigmas for both samplers of a pair (TCD's and LCM's timesteps agree by default).
            sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, args.steps, 1.0, scheduler=scheduler)
        result = compare(name, baseline, samplers, sigmas, args, case, comfy)
        print(json.dumps(result, indent=2))
        over_budget |= result["ratio"] > args.max_ratio
    return 1 if over_budget else 0


if __name__ == "__main__":
    sys.exit(main())
