"""LCMSampler against ComfyUI's built-in `lcm` sampler, in a real ComfyUI, on the CPU.

Both run through comfy.sample.sample_custom on the same tiny SD1.5-style UNet, the same
LCM sigmas and the same seed; rounds alternate (order swapped every round) after a
warm-up; the medians, the median of the per-round ratios (the gated figure) and the
ratio of the medians are reported. The ratio is what matters: the UNet
is the same in both, so it measures the sampler's own overhead (plan, boundary
condition, the CPU noise stream).

    LCM_COMFYUI=<tree> python benchmarks/bench_sampler.py [--rounds 40] [--latent 64] [--max-ratio 1.02]

Exits 1 when the ratio is above --max-ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import comfy_host  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--latent", type=int, default=64, help="latent height and width (64 = a 512x512 image)")
    parser.add_argument("--max-ratio", type=float, default=1.02)
    args = parser.parse_args()

    import torch

    comfy = comfy_host.import_comfy()
    pack = comfy_host.import_pack()
    _, model = comfy_host.tiny_unet_pair(seed=0)
    config = comfy_host.lcm_config(pack.nodes, model)
    sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, args.steps, 1.0)
    samplers = {
        "LCMSampler": pack.nodes.LCMSampler().get_sampler(config)[0],
        "builtin_lcm": comfy.samplers.sampler_object("lcm"),
    }
    embeds = torch.randn(1, 7, comfy_host.TINY_UNET_DIFFUSERS["cross_attention_dim"],
                         generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(1, 4, args.latent, args.latent)
    noise = comfy.sample.prepare_noise(latent, 0)

    def run(sampler):
        return comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, [[embeds, {}]], [[embeds, {}]], latent,
                                          disable_pbar=True, seed=0)

    names = list(samplers)
    for _ in range(args.warmup):
        for name in names:
            run(samplers[name])
    timings = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            run(samplers[name])
            timings[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    # Each round timed both back to back: the median of the per-round ratios cancels slow
    # drifts in machine load that the ratio of the two medians still feels.
    ratio = statistics.median(a / b for a, b in zip(timings["LCMSampler"], timings["builtin_lcm"]))
    print(json.dumps({
        "benchmark": "sampler", "latent": [1, 4, args.latent, args.latent], "steps": args.steps,
        "device": "cpu", "threads": torch.get_num_threads(), "rounds": args.rounds,
        "median_s": {name: round(value, 4) for name, value in medians.items()},
        "ratio": round(ratio, 4), "ratio_of_medians": round(medians["LCMSampler"] / medians["builtin_lcm"], 4),
        "max_ratio": args.max_ratio, "torch": torch.__version__,
    }, indent=2))
    return 0 if ratio <= args.max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
