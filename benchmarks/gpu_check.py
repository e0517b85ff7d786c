"""The GPU checks of the nodes issue, as one prepared script for a session with a CUDA device.

1. The sampling loops of LCMSampler and TCDSampler under ``torch.cuda.set_sync_debug_mode``:
   every host-device synchronisation is recorded with the Python line that caused it; none
   may come from this pack's code (ComfyUI's own code, e.g. its CFG and memory checks, is
   listed apart).
2. LCMSampler against ComfyUI's built-in ``lcm`` at 512x512 (a 64x64 latent) with an
   SD1.5-size UNet with seeded random weights (fp16), through comfy.sample.sample_custom,
   alternating rounds, median of the per-round ratios (budget 1.02).
3. The flow-matching loop (LCMSampler on the tests' tiny SD3, ComfyUI's own SD3 class) under
   the same sync debug mode.
4. Device independence, the promise of the CPU noise stream: one seed gives the same final
   latents on the CPU and on CUDA, in float32 (TF32 off), for a discrete model (tiny SD1.5,
   LCMSampler and TCDSampler) and a flow model (tiny SD3, LCMSampler), within 1e-4 of the
   latent's magnitude.

    LCM_COMFYUI=<tree> python benchmarks/gpu_check.py [--rounds 10] [--max-ratio 1.02]
    LCM_COMFYUI=<tree> python benchmarks/gpu_check.py --dry-run   # the same code on the CPU, tiny UNet

Prints one JSON object (with the card's name) and exits 1 when a check fails, 2 without CUDA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import comfy_host  # noqa: E402

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ComfyUI's SD1.5 UNet (comfy/model_detection.py, SD15): 860M parameters.
SD15_UNET = dict(
    comfy_host.TINY_UNET_COMFY, model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1, context_dim=768, image_size=32,
)


def build_model(comfy, device, dtype, tiny: bool):
    import torch

    unet_config = dict(comfy_host.TINY_UNET_COMFY) if tiny else dict(SD15_UNET)
    model_config = comfy.supported_models.SD15(unet_config)
    model_config.set_inference_dtype(dtype, None)
    model = comfy.model_base.BaseModel(model_config, device=torch.device("cpu"))
    comfy_host.seeded_init_(model.diffusion_model, seed=0)
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu")), \
        unet_config["context_dim"]


def in_pack(path: str) -> bool:
    """A file of the pack itself (lcm_core/, nodes/, __init__.py), not of its tests or benchmarks."""
    relative = os.path.relpath(os.path.abspath(path), PACK_DIR)
    return not relative.startswith((os.pardir, "tests", "benchmarks"))


def sync_sites(run, cuda: bool):
    """Run ``run()`` with sync debug mode "warn"; return the (file, line) of each synchronisation."""
    import torch

    if not cuda:
        run()
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [(w.filename, w.lineno) for w in caught if "synchroniz" in str(w.message).lower()]


DEVICE_TOLERANCE = 1e-4  # relative to the latent's largest magnitude


def device_parity(comfy, pack, cuda: bool) -> dict:
    """The final latents of one seed on the CPU and on the GPU (fp32, tiny models): worst relative difference."""
    import torch

    import flow_models

    torch.backends.cuda.matmul.allow_tf32 = False  # true float32 on both sides: TF32 would round to 10 bits
    torch.backends.cudnn.allow_tf32 = False
    devices = [torch.device("cpu")] + ([comfy.model_management.get_torch_device()] if cuda else [])
    _, sd15 = comfy_host.tiny_unet_pair(seed=0)
    sd3 = flow_models.sd3_pair(seed=0).model
    config = comfy_host.lcm_config(pack.nodes, sd15)
    discrete_sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    flow_sigmas, _ = pack.nodes.FlowMatchLCMTimesteps().get_sigmas(sd3, 4, 1.0)
    embeds = torch.randn(1, 7, comfy_host.TINY_UNET_DIFFUSERS["cross_attention_dim"],
                         generator=torch.Generator().manual_seed(0))
    flow_positive, _ = flow_models.comfy_conditioning("sd3", flow_models.prompt("sd3"))
    cases = {
        "sd15_LCMSampler": (sd15, pack.nodes.LCMSampler().get_sampler(config)[0], discrete_sigmas,
                            [[embeds, {}]], (1, 4, 16, 16)),
        "sd15_TCDSampler": (sd15, pack.nodes.TCDSampler().get_sampler(config, 0.3)[0], discrete_sigmas,
                            [[embeds, {}]], (1, 4, 16, 16)),
        "sd3_LCMSampler": (sd3, pack.nodes.LCMSampler().get_sampler(config)[0], flow_sigmas, flow_positive,
                           (1, 16, 16, 16)),
    }
    report = {}
    for name, (model, sampler, sigmas, positive, shape) in cases.items():
        latent = torch.zeros(shape)
        noise = comfy.sample.prepare_noise(latent, 7)
        results = []
        for device in devices:
            on_device = model.clone()
            on_device.load_device = device
            results.append(comfy.sample.sample_custom(on_device, noise, 1.5, sampler, sigmas, positive, positive,
                                                      latent, disable_pbar=True, seed=7).float().cpu())
        worst = (results[-1] - results[0]).abs().max().item() / results[0].abs().max().item()
        report[name] = {"devices": [str(d) for d in devices], "relative_difference": worst,
                        "ok": worst <= DEVICE_TOLERANCE}
    return report


def flow_sync_sites(comfy, pack, cuda: bool) -> list:
    """Sync sites of LCMSampler's flow loop on the tiny SD3 (fp32 on the GPU)."""
    import torch

    import flow_models

    model = flow_models.sd3_pair(seed=0).model
    sigmas, _ = pack.nodes.FlowMatchLCMTimesteps().get_sigmas(model, 4, 1.0)
    positive, _ = flow_models.comfy_conditioning("sd3", flow_models.prompt("sd3"))
    latent = torch.zeros(1, 16, 64, 64)
    noise = comfy.sample.prepare_noise(latent, 0)
    sampler = pack.nodes.LCMSampler().get_sampler(comfy_host.lcm_config(pack.nodes))[0]

    def run():
        comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, positive, positive, latent,
                                   disable_pbar=True, seed=0)
        if cuda:
            torch.cuda.synchronize()

    run()  # warm-up
    return sync_sites(run, cuda)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--max-ratio", type=float, default=1.02)
    parser.add_argument("--dry-run", action="store_true", help="CPU and a tiny UNet: checks the script itself")
    args = parser.parse_args()

    import torch

    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        print(json.dumps({"error": "no CUDA device; use --dry-run to exercise the script on the CPU"}))
        return 2
    comfy = comfy_host.import_comfy(cpu=not cuda)
    pack = comfy_host.import_pack()
    device = comfy.model_management.get_torch_device()
    model, context_dim = build_model(comfy, device, torch.float16 if cuda else torch.float32, tiny=args.dry_run)
    config = comfy_host.lcm_config(pack.nodes, model)
    sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, args.steps, 1.0)
    samplers = {"LCMSampler": pack.nodes.LCMSampler().get_sampler(config)[0],
                "builtin_lcm": comfy.samplers.sampler_object("lcm")}
    embeds = torch.randn(1, 77, context_dim, generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(1, 4, 64, 64)
    noise = comfy.sample.prepare_noise(latent, 0)

    def run(sampler):
        out = comfy.sample.sample_custom(model, noise, 1.0, sampler, sigmas, [[embeds, {}]], [[embeds, {}]], latent,
                                         disable_pbar=True, seed=0)
        if cuda:
            torch.cuda.synchronize()
        return out

    tcd_sampler = pack.nodes.TCDSampler().get_sampler(config, 0.3)[0]  # checked for syncs, not timed
    for sampler in (*samplers.values(), tcd_sampler):
        run(sampler)  # warm-up: model load, kernels
    sites = sync_sites(lambda: run(samplers["LCMSampler"]), cuda) + sync_sites(lambda: run(tcd_sampler), cuda)
    sites += flow_sync_sites(comfy, pack, cuda)
    ours = sorted({f"{os.path.relpath(f, PACK_DIR)}:{n}" for f, n in sites if in_pack(f)})
    host = sorted({f"{f}:{n}" for f, n in sites if not in_pack(f)})

    timings = {name: [] for name in samplers}
    names = list(samplers)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            run(samplers[name])
            timings[name].append(time.perf_counter() - start)
    ratio = statistics.median(a / b for a, b in zip(timings["LCMSampler"], timings["builtin_lcm"]))
    parity = device_parity(comfy, pack, cuda)
    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)",
        "unet": "SD1.5 size, random fp16" if not args.dry_run else "tiny",
        "latent": [1, 4, 64, 64], "steps": args.steps, "rounds": args.rounds,
        "median_s": {name: round(statistics.median(v), 4) for name, v in timings.items()},
        "ratio": round(ratio, 4), "max_ratio": args.max_ratio,
        "syncs_in_pack": ours, "syncs_in_host": host[:20], "cpu_vs_device": parity, "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    return 0 if ratio <= args.max_ratio and not ours and all(case["ok"] for case in parity.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
