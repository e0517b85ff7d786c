"""Sample quality of the digit demo's models in a real ComfyUI: the LCM paper's table in miniature.

The demo's tiny SD1.5-family UNets (demo/lcm_digits: an epsilon teacher and its consistency-
distilled LCM student, trained here by demo/train_digits.py) sample digits 0-9 in equal numbers;
each sample set is scored by its Frechet distance (FD, Heusel et al. 2017) to the 500 held-out
digits in the 128-d feature space of the committed digit classifier. Lower is better; two sets of
real digits (the training split against the held-out one) score the floor printed with the table,
noise scores in the hundreds. FD is biased upwards at small sample counts: compare rows of one run.

Rows (one per model, sampler, scheduler, steps, gamma), each over several seeds:
  - lcm_student, LCMSampler: the pack's LCMSchedulerConfig / LCMTimesteps / LCMSampler through
    ComfyUI's sample_custom (what SamplerCustom runs), cfg 1;
  - lcm_student, diffusers LCMScheduler: a plain loop of diffusers' LCMScheduler on the same UNet
    and seed (the reference); it must give the pack's numbers (exit status 1 otherwise);
  - lcm_student, lcm: ComfyUI's own `lcm` sampler with the sgm_uniform, simple and normal
    schedulers, on the model patched with ModelSamplingDiscrete(lcm) and on the unpatched one,
    through comfy.sample.sample (what KSampler runs);
  - lcm_student, TCDSampler at gamma 0, 0.3 and 1;
  - teacher: ComfyUI's ddim and euler (scheduler simple) up to 50 steps, and the pack's
    LCMSampler on the teacher that was never distilled, all at cfg 4 (the student's distilled scale).

The flow-matching pair (demo/train_flow_digits.py; model.FLOW_SHIFT 5 carried by the model):
  - flow_student, scheduler training_timesteps: FlowMatchLCMTimesteps' custom sigmas
    linspace(1, 1/n, n) (LightX2V's denoising_step_list / 1000), shifted by the model's shift:
    at n = 4 the student's training sigmas, at 1 and 2 steps a subset of them, at 8 a superset
    (every other one is a training sigma); sampled with the pack's LCMSampler (LCM-style) and
    with ComfyUI's euler, through sample_custom, cfg 1;
  - flow_student, ComfyUI's lcm and euler with the simple, normal, sgm_uniform, beta and
    ddim_uniform schedulers (KSampler), cfg 1;
  - flow_teacher: ComfyUI's euler + simple up to 50 steps at model.FLOW_GUIDANCE (the student's
    distilled scale).

    LCM_COMFYUI=<tree> python benchmarks/bench_quality.py [--quick] [--seeds 3] [--samples 2000]
        [--out benchmarks/results/quality.json]

Writes the rows as a JSON list (keys model, sampler, scheduler, steps, gamma, fd_mean, fd_std,
seeds, samples_per_seed, plus model_sampling, cfg and wall_s) and prints a table. The full run
(about 21 minutes on 2 shared CPU cores) writes benchmarks/results/quality.json; `--quick` (under a
minute) recomputes only the pack's, diffusers' and ComfyUI's lcm rows at 1 and 4 steps and the
flow student's two rows on its training timesteps with 500 samples x 2 seeds, and writes nothing
unless --out is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import comfy_host  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "quality.json"
STUDENT_STEPS = (1, 2, 4, 8)
TEACHER_STEPS = (1, 2, 4, 8, 50)
QUICK_STEPS = (1, 4)
TEACHER_CFG = 4.0  # the scale the student was distilled at (demo/lcm_digits/models/MODEL_CARD.md)
TCD_GAMMAS = (0.0, 0.3, 1.0)
BUILTIN_SCHEDULERS = ("sgm_uniform", "simple", "normal")
FLOW_SCHEDULERS = ("simple", "normal", "sgm_uniform", "beta", "ddim_uniform")
FLOW_SAMPLERS = ("lcm", "euler")
TRAINING_TIMESTEPS = "training_timesteps"
# The pack against diffusers on the same weights and seeds: the latents agree within 1e-4 (the parity
# tests), which moves an FD in the tens by far less than this.
PARITY_TOLERANCE = 0.01


class Bench:
    """The models, the metric and one function per way of sampling; every sampler returns latents."""

    def __init__(self, samples: int) -> None:
        import torch

        self.torch = torch
        self.comfy = comfy_host.import_comfy()
        self.pack = comfy_host.import_pack()
        self.demo = comfy_host.import_digits_demo()
        self.digits = self.demo.model
        loader = self.demo.demo_nodes.DigitsModelLoader()
        self.models = {kind: loader.load(kind)[0] for kind in ("student", "teacher", "flow_student", "flow_teacher")}
        # The usual advice for ComfyUI's own lcm sampler: the student patched with ModelSamplingDiscrete(lcm).
        self.models["patched_student"] = self.comfy.nodes_model_advanced.ModelSamplingDiscrete().patch(
            self.models["student"], "lcm", False)[0]
        self.classifier = self.digits.load_classifier()
        train_x, _, held_x, _ = self.digits.digit_split()
        with torch.no_grad():
            self.held_features = self.features(held_x)
            # The floor: real digits that no model drew (the 1,297 of the training split).
            self.real_fd = self.digits.frechet_distance(self.features(train_x), self.held_features)
        self.samples = samples
        self.train_count = len(train_x)
        table = self.digits.class_embedding()
        wanted = torch.arange(samples) % self.digits.NUM_DIGITS  # digits 0-9 in equal numbers
        context = self.digits.context_for(wanted, table)
        self.positive = [[context, {}]]
        self.negative = [[table[self.digits.NULL_ROW].view(1, 1, -1), {}]]
        self.latent = torch.zeros(samples, self.digits.LATENT_CHANNELS, self.digits.LATENT_SIZE,
                                  self.digits.LATENT_SIZE)

    def features(self, images: Any) -> Any:
        return self.classifier.features(images).double().numpy()

    def fd(self, latents: Any) -> float:
        with self.torch.no_grad():
            images = self.digits.unpack(latents).clamp(-1, 1)
            return self.digits.frechet_distance(self.features(images), self.held_features)

    def noise(self, seed: int) -> Any:
        return self.comfy.sample.prepare_noise(self.latent, seed)

    def pack_sampler(self, kind: str, steps: int, cfg: float, gamma: Optional[float] = None) -> Callable[[int], Any]:
        """The pack's nodes as SamplerCustom runs them (comfy.sample.sample_custom)."""
        model = self.models[kind]
        nodes = self.pack.nodes
        config = comfy_host.lcm_config(nodes, model)
        scheduler = "lcm" if gamma is None else "tcd"
        sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, steps, 1.0, scheduler=scheduler)
        sampler = (nodes.LCMSampler().get_sampler(config) if gamma is None
                   else nodes.TCDSampler().get_sampler(config, gamma))[0]

        def run(seed: int) -> Any:
            return self.comfy.sample.sample_custom(model, self.noise(seed), cfg, sampler, sigmas, self.positive,
                                                   self.negative, self.latent, disable_pbar=True, seed=seed)
        return run

    def training_grid_sampler(self, sampler_name: str, steps: int) -> Callable[[int], Any]:
        """The flow student on its training-timestep rule (FlowMatchLCMTimesteps' custom sigmas, shifted by the
        model), with the pack's LCMSampler or a ComfyUI sampler, as SamplerCustom runs them."""
        model = self.models["flow_student"]
        nodes = self.pack.nodes
        grid = ", ".join(f"{1 - i / steps:g}" for i in range(steps))  # linspace(1, 1/n, n)
        sigmas, _ = nodes.FlowMatchLCMTimesteps().get_sigmas(model, steps, 1.0, sigmas=grid)
        # LCMSampler's config (required) is unused on a flow model: its defaults serve.
        sampler = (nodes.LCMSampler().get_sampler(comfy_host.lcm_config(nodes))[0] if sampler_name == "LCMSampler"
                   else self.comfy.samplers.sampler_object(sampler_name))

        def run(seed: int) -> Any:
            return self.comfy.sample.sample_custom(model, self.noise(seed), 1.0, sampler, sigmas, self.positive,
                                                   self.negative, self.latent, disable_pbar=True, seed=seed)
        return run

    def builtin_sampler(self, kind: str, sampler_name: str, scheduler: str, steps: int,
                        cfg: float) -> Callable[[int], Any]:
        """ComfyUI's own sampler and scheduler as KSampler runs them (comfy.sample.sample)."""
        model = self.models[kind]

        def run(seed: int) -> Any:
            return self.comfy.sample.sample(model, self.noise(seed), steps, cfg, sampler_name, scheduler,
                                            self.positive, self.negative, self.latent, disable_pbar=True, seed=seed)
        return run

    def diffusers_sampler(self, steps: int) -> Callable[[int], Any]:
        """diffusers' LCMScheduler in a plain loop on the student's UNet (what LatentConsistencyModelPipeline
        does at guidance 1): initial noise and step noise from one CPU generator seeded with the seed."""
        import diffusers

        torch = self.torch
        unet = self.models["student"].model.diffusion_model
        context = self.positive[0][0]

        @torch.no_grad()
        def run(seed: int) -> Any:
            scheduler = diffusers.LCMScheduler()  # SD's schedule: scaled_linear 0.00085..0.012, 1000 steps
            scheduler.set_timesteps(steps)
            generator = torch.Generator().manual_seed(seed)
            x = torch.randn(self.latent.shape, generator=generator)
            for t in scheduler.timesteps:
                eps = unet(x, t.float().expand(len(x)), context=context)
                x = scheduler.step(eps, t, x, generator=generator).prev_sample
            return x
        return run


def row_plan(bench: Bench, quick: bool) -> List[Dict[str, Any]]:
    """Every row to measure, with the function that draws its samples for a seed."""
    student_steps = QUICK_STEPS if quick else STUDENT_STEPS
    plan: List[Dict[str, Any]] = []

    def add(model: str, sampler: str, scheduler: str, steps: int, run: Callable[[int], Any], cfg: float = 1.0,
            gamma: Optional[float] = None, model_sampling: Optional[str] = None) -> None:
        plan.append({"model": model, "sampler": sampler, "scheduler": scheduler, "steps": steps, "gamma": gamma,
                     "model_sampling": model_sampling, "cfg": cfg, "run": run})

    for sampler_name in ("LCMSampler", "euler"):  # the flow student on its training timesteps
        for steps in (4,) if quick else STUDENT_STEPS:
            add("flow_student", sampler_name, TRAINING_TIMESTEPS, steps,
                bench.training_grid_sampler(sampler_name, steps))
    for steps in student_steps:
        add("lcm_student", "LCMSampler", "LCMTimesteps", steps, bench.pack_sampler("student", steps, 1.0))
        add("lcm_student", "diffusers LCMScheduler", "LCMScheduler", steps, bench.diffusers_sampler(steps))
        for patched in (True, False):
            for scheduler in BUILTIN_SCHEDULERS:
                add("lcm_student", "lcm", scheduler, steps,
                    bench.builtin_sampler("patched_student" if patched else "student", "lcm", scheduler, steps, 1.0),
                    model_sampling="lcm" if patched else "eps")
    if quick:
        return plan
    for steps in student_steps:
        for gamma in TCD_GAMMAS:
            add("lcm_student", "TCDSampler", "LCMTimesteps (tcd)", steps,
                bench.pack_sampler("student", steps, 1.0, gamma), gamma=gamma)
        add("teacher", "LCMSampler", "LCMTimesteps", steps, bench.pack_sampler("teacher", steps, TEACHER_CFG),
            cfg=TEACHER_CFG)
    for steps in TEACHER_STEPS:
        for sampler_name in ("ddim", "euler"):
            # KSampler's default scheduler. Not ddim_uniform: at few steps ComfyUI's ddim_uniform grid
            # starts low (1 step: t = 1, 2 steps: t = 501), so the noise is never removed.
            add("teacher", sampler_name, "simple", steps,
                bench.builtin_sampler("teacher", sampler_name, "simple", steps, TEACHER_CFG), cfg=TEACHER_CFG)
    for steps in STUDENT_STEPS:
        for sampler_name in FLOW_SAMPLERS:
            for scheduler in FLOW_SCHEDULERS:
                add("flow_student", sampler_name, scheduler, steps,
                    bench.builtin_sampler("flow_student", sampler_name, scheduler, steps, 1.0))
    guidance = bench.digits.FLOW_GUIDANCE
    for steps in TEACHER_STEPS:
        add("flow_teacher", "euler", "simple", steps,
            bench.builtin_sampler("flow_teacher", "euler", "simple", steps, guidance), cfg=guidance)
    return plan


def measure(bench: Bench, plan: List[Dict[str, Any]], seeds: int) -> List[Dict[str, Any]]:
    rows = []
    for index, entry in enumerate(plan):
        run = entry.pop("run")
        start = time.perf_counter()
        scores = [bench.fd(run(seed)) for seed in range(seeds)]
        row = {**entry, "fd_mean": round(statistics.mean(scores), 2),
               "fd_std": round(statistics.stdev(scores), 2) if seeds > 1 else 0.0,
               "seeds": seeds, "samples_per_seed": bench.samples, "wall_s": round(time.perf_counter() - start, 1)}
        rows.append(row)
        print(f"[{index + 1}/{len(plan)}] {describe(row)}: FD {row['fd_mean']:.2f} +- {row['fd_std']:.2f}",
              file=sys.stderr, flush=True)
    return rows


def describe(row: Dict[str, Any]) -> str:
    return f"{row['model']}, {table_sampler(row)}, {row['steps']} step{'s' if row['steps'] > 1 else ''}"


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """docs/quality.md's table: one line per way of sampling, one column per step count, "FD (std)" cells."""
    steps = sorted({row["steps"] for row in rows})
    lines: Dict[str, Dict[int, str]] = {}
    for row in rows:
        label = " | ".join([row["model"], table_sampler(row), str(row["cfg"])])
        lines.setdefault(label, {})[row["steps"]] = f"{row['fd_mean']:.1f} ({row['fd_std']:.1f})"
    header = "| model | sampler | cfg | " + " | ".join(f"{n} step{'s' if n > 1 else ''}" for n in steps) + " |"
    separator = "|" + "---|" * (3 + len(steps))
    body = [f"| {label} | " + " | ".join(cells.get(n, "") for n in steps) + " |" for label, cells in lines.items()]
    return "\n".join([header, separator, *body]) + "\n"


def split_tables(rows: List[Dict[str, Any]]) -> List[List[Dict[str, Any]]]:
    """docs/quality.md's two tables: the epsilon pair, then the flow pair (each only if it has rows)."""
    flow = [row for row in rows if row["model"].startswith("flow_")]
    discrete = [row for row in rows if not row["model"].startswith("flow_")]
    return [group for group in (discrete, flow) if group]


def table_sampler(row: Dict[str, Any]) -> str:
    if row["scheduler"] == TRAINING_TIMESTEPS:
        return f"{row['sampler'] if row['sampler'] == 'LCMSampler' else 'ComfyUI `euler`'} + training timesteps"
    if row["model"].startswith("flow_"):
        return f"ComfyUI `{row['sampler']}` + `{row['scheduler']}`"
    if row["sampler"] == "lcm":
        patch = "ModelSamplingDiscrete(lcm)" if row["model_sampling"] == "lcm" else "unpatched model"
        return f"ComfyUI `lcm` + `{row['scheduler']}`, {patch}"
    if row["sampler"] in ("ddim", "euler"):
        return f"ComfyUI `{row['sampler']}` + `{row['scheduler']}`"
    if row["sampler"] == "TCDSampler":
        return f"TCDSampler, gamma {row['gamma']:g}"
    return row["sampler"]


def parity_failures(rows: List[Dict[str, Any]]) -> List[str]:
    """Steps where the pack's LCMSampler and diffusers' LCMScheduler give different FDs."""
    pack = {r["steps"]: r["fd_mean"] for r in rows if r["sampler"] == "LCMSampler" and r["model"] == "lcm_student"}
    reference = {r["steps"]: r["fd_mean"] for r in rows if r["sampler"] == "diffusers LCMScheduler"}
    return [f"{steps} steps: LCMSampler {pack[steps]} vs diffusers {reference[steps]}" for steps in sorted(pack)
            if steps in reference and abs(pack[steps] - reference[steps]) > PARITY_TOLERANCE]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the pack's and ComfyUI's lcm rows at 1 and 4 steps, "
                        "500 samples x 2 seeds; writes nothing unless --out is given")
    parser.add_argument("--seeds", type=int, help="seeds per row (default 3, quick 2)")
    parser.add_argument("--samples", type=int, help="samples per seed (default 2000, quick 500)")
    parser.add_argument("--out", type=Path, help=f"JSON file for the rows (default {RESULTS.name} in "
                        "benchmarks/results for a full run)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (2 if args.quick else 3)
    samples = args.samples or (500 if args.quick else 2000)
    if seeds < 1 or samples < 10:
        parser.error(f"--seeds {seeds} / --samples {samples}: need at least 1 seed and 10 samples (one per digit)")
    out = args.out or (None if args.quick else RESULTS)

    start = time.perf_counter()
    bench = Bench(samples)
    print(f"floor: FD of the {bench.train_count} training digits against the held-out ones = {bench.real_fd:.2f}",
          file=sys.stderr)
    rows = measure(bench, row_plan(bench, args.quick), seeds)
    print(json.dumps({"benchmark": "quality", "rows": len(rows), "floor_fd": round(bench.real_fd, 2),
                      "wall_s": round(time.perf_counter() - start, 1)}))
    for table_rows in split_tables(rows):
        print(markdown_table(table_rows))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    failures = parity_failures(rows)
    for failure in failures:
        print(f"bench_quality: the pack and diffusers disagree at {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
