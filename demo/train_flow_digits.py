#!/usr/bin/env python3
"""Train the demo's flow-matching digit pair on the CPU: a rectified-flow teacher and its 4-step student.

    python demo/train_flow_digits.py [--out DIR] [--seed 0] [--quick] [--comfyui TREE]

The sibling of demo/train_digits.py (same data, split, UNet, budgets and helpers; run that one
first: this one conditions on its committed class-embedding table and scores with its classifier).
The models are ComfyUI flow models (demo/lcm_digits/model.py, DigitsFlow: CONST over
ModelSamplingDiscreteFlow with shift model.FLOW_SHIFT = 5), distilled the way LightX2V's Wan
4-step models are set up: a fixed list of training timesteps with a shift, LCM-style sampling.

Phases, each bounded by wall time AND a step count, whichever comes first (train_digits.run_phase):
  (a) teacher: rectified flow (Liu et al. 2022; Lipman et al. 2023): x_s = (1 - s) x0 + s z with
      s ~ U(0, 1), the network (time input s * 1000, as ComfyUI gives it) regresses v = z - x0;
      class condition through cross-attention with the epsilon pair's frozen table, 15 % of the
      conditions replaced by the null row (classifier-free guidance); EMA of its weights.
  (b) teacher trajectories: the EMA teacher with CFG at --guidance integrates the probability-flow
      ODE from pure noise with Euler steps on a grid that holds the four training sigmas
      (model.flow_training_sigmas(): 1, 0.9375, 0.8333, 0.625 = LightX2V's denoising_step_list
      [1000, 750, 500, 250] / 1000 at sample_shift 5) plus SUBSTEPS evenly spaced sigmas between
      neighbours (and from 0.625 down to 0); each trajectory keeps its point at each training sigma
      and its end x0.
  (c) student: initialised from the teacher, trained ONLY at the four training sigmas by ODE
      regression (as CausVid's and Self-Forcing's step-distilled Wan students are initialised):
      at a trajectory's point x_s it predicts x0_hat = x_s - s v_hat (the CONST model's own
      denoised output), with the mean squared error to the trajectory's end. Sampling is LCM-
      style: x0_hat at a training sigma, fresh noise to the next, x0_hat at the last (sigma 0.625).
  (d) evaluation of the written (fp16-rounded) weights against the held-out digits with the
      committed classifier (Frechet distance, class accuracy): the teacher with Euler, the
      student LCM-style on its training sigmas. benchmarks/bench_quality.py measures the same
      models inside ComfyUI.

Writes DIR/digits_flow_{teacher,student}_unet.safetensors and DIR/train_flow_report.json.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Passive OpenMP waiting before torch loads (why: demo/train_digits.py, where the same line stands).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
import train_digits as shared  # noqa: E402

logger = logging.getLogger("train_flow_digits")
Budget = shared.Budget


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    batch: int
    student_batch: int
    teacher: Budget
    trajectories: Budget  # steps = batches of trajectory_batch trajectories
    student: Budget
    trajectory_batch: int
    substeps: int  # Euler steps of the teacher's ODE between neighbouring sigmas of the training grid
    teacher_lr: float
    student_lr: float
    cond_dropout: float
    guidance: float
    eval_samples: int


def flow_mix(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The rectified-flow forward process x_s = (1 - s) x0 + s z (ComfyUI's CONST noise_scaling)."""
    s = sigma.view(-1, 1, 1, 1)
    return (1.0 - s) * x0 + s * noise


def velocity(unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The network's v at sigma; ComfyUI's ModelSamplingDiscreteFlow feeds it sigma * 1000."""
    return unet(x, sigma.expand(len(x)) * 1000.0, context=context)


def guided_velocity(unet: torch.nn.Module, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                    null_context: torch.Tensor, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return velocity(unet, x, sigma, context)
    v_c, v_u = velocity(unet, torch.cat([x, x]), sigma, torch.cat([context, null_context])).chunk(2)
    return v_u + guidance * (v_c - v_u)


def ode_grid(training_sigmas: Sequence[float], substeps: int) -> Tuple[List[float], List[int]]:
    """The teacher's Euler grid from 1 to 0 and the positions of the training sigmas in it."""
    knots = [*training_sigmas, 0.0]
    grid: List[float] = []
    positions = []
    for high, low in zip(knots, knots[1:]):
        positions.append(len(grid))
        grid.extend(high + (low - high) * j / substeps for j in range(substeps))
    return grid + [0.0], positions


# ---------------------------------------------------------------------------------------------


def train_teacher(model_mod: Any, latents: torch.Tensor, labels: torch.Tensor, table: torch.Tensor,
                  settings: Settings) -> Tuple[Any, Dict[str, Any]]:
    base = model_mod.build_unet_model(flow=True)
    unet = base.diffusion_model
    shared.init_weights_(unet, settings.seed)
    unet.train().requires_grad_(True)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=settings.teacher_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed + 11)

    def step(i: int, progress: float) -> float:
        idx = torch.randint(0, len(latents), (settings.batch,), generator=gen)
        x0 = latents[idx]
        rows = labels[idx].clone()
        rows[torch.rand(settings.batch, generator=gen) < settings.cond_dropout] = model_mod.NULL_ROW
        sigma = torch.rand(settings.batch, generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        v = unet(flow_mix(x0, noise, sigma), sigma * 1000.0, context=model_mod.context_for(rows, table))
        loss = torch.nn.functional.mse_loss(v, noise - x0)
        value = shared.optimise_(optimizer, loss, shared.lr_at(i, progress, settings.teacher_lr, warmup=100))
        shared.ema_update_(ema, unet, min(0.995, (1 + i) / (10 + i)))
        return value

    report = shared.run_phase("teacher", settings.teacher, step)
    base.diffusion_model = ema
    return base, report


@torch.no_grad()
def teacher_trajectories(model_mod: Any, teacher: torch.nn.Module, table: torch.Tensor,
                         settings: Settings) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(points (N, 4, C, H, W) at the training sigmas, ends (N, C, H, W), rows (N,)) and a report."""
    grid, positions = ode_grid(model_mod.flow_training_sigmas(), settings.substeps)
    gen = torch.Generator().manual_seed(settings.seed + 12)
    n = settings.trajectory_batch
    null_context = table[model_mod.NULL_ROW].expand(n, 1, -1)
    points: List[torch.Tensor] = []
    ends: List[torch.Tensor] = []
    all_rows: List[torch.Tensor] = []

    def step(i: int, progress: float) -> float:
        rows = torch.randint(0, model_mod.NUM_DIGITS, (n,), generator=gen)
        # Some null rows, so that the student's "no digit" condition draws any digit (as train_digits).
        rows[torch.rand(n, generator=gen) < 0.1] = model_mod.NULL_ROW
        context = model_mod.context_for(rows, table)
        x = torch.randn(n, model_mod.LATENT_CHANNELS, model_mod.LATENT_SIZE, model_mod.LATENT_SIZE, generator=gen)
        kept = []
        for k, (sigma, sigma_next) in enumerate(zip(grid, grid[1:])):
            if k in positions:
                kept.append(x.clone())
            v = guided_velocity(teacher, x, torch.tensor([sigma]), context, null_context, settings.guidance)
            x = x + (sigma_next - sigma) * v  # Euler on dx/ds = v
        points.append(torch.stack(kept, 1))
        ends.append(x)
        all_rows.append(rows)
        return float(x.abs().mean())

    report = shared.run_phase("trajectories", settings.trajectories, step)
    data = {"points": torch.cat(points), "ends": torch.cat(ends), "rows": torch.cat(all_rows)}
    report.update({"trajectories": len(data["rows"]), "euler_steps": len(grid) - 1, "guidance": settings.guidance})
    return data, report


def distill_student(model_mod: Any, teacher: Any, table: torch.Tensor, data: Dict[str, torch.Tensor],
                    settings: Settings) -> Tuple[Any, Dict[str, Any]]:
    student_base = model_mod.build_unet_model(flow=True)
    student_base.diffusion_model.load_state_dict(teacher.diffusion_model.state_dict())
    student = student_base.diffusion_model.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.student_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed + 13)
    sigmas = torch.tensor(model_mod.flow_training_sigmas())
    points, ends, rows = data["points"], data["ends"], data["rows"]

    def step(i: int, progress: float) -> float:
        idx = torch.randint(0, len(rows), (settings.student_batch,), generator=gen)
        k = torch.randint(0, len(sigmas), (settings.student_batch,), generator=gen)
        x = points[idx, k]
        sigma = sigmas[k]
        v = student(x, sigma * 1000.0, context=model_mod.context_for(rows[idx], table))
        x0_hat = x - sigma.view(-1, 1, 1, 1) * v  # CONST's denoised output
        loss = torch.nn.functional.mse_loss(x0_hat, ends[idx])
        return shared.optimise_(optimizer, loss, shared.lr_at(i, progress, settings.student_lr, warmup=50))

    report = shared.run_phase("student", settings.student, step)
    student.eval().requires_grad_(False)
    return student_base, report


# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_euler(unet: torch.nn.Module, sigmas: Sequence[float], context: torch.Tensor, null_context: torch.Tensor,
                 guidance: float, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(len(context), 4, 4, 4, generator=gen)
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        x = x + (sigma_next - sigma) * guided_velocity(unet, x, torch.tensor([sigma]), context, null_context, guidance)
    return x


@torch.no_grad()
def sample_lcm(unet: torch.nn.Module, sigmas: Sequence[float], context: torch.Tensor,
               gen: torch.Generator) -> torch.Tensor:
    """LCM-style: x0_hat, then fresh noise to the next sigma (diffusers' FlowMatchLCMScheduler step)."""
    x = torch.randn(len(context), 4, 4, 4, generator=gen)
    for sigma, sigma_next in zip(sigmas, sigmas[1:]):
        x0 = x - sigma * velocity(unet, x, torch.tensor([sigma]), context)
        x = flow_mix(x0, torch.randn(x.shape, generator=gen), torch.tensor([sigma_next])) if sigma_next > 0 else x0
    return x


def evaluate(model_mod: Any, teacher: torch.nn.Module, student: torch.nn.Module, table: torch.Tensor,
             classifier: torch.nn.Module, held_x: torch.Tensor, settings: Settings) -> Dict[str, Any]:
    start = time.perf_counter()
    with torch.no_grad():
        held_features = classifier.features(held_x).double().numpy()
    wanted = torch.arange(settings.eval_samples) % model_mod.NUM_DIGITS
    context = model_mod.context_for(wanted, table)
    null_context = table[model_mod.NULL_ROW].expand(len(wanted), 1, -1)

    def judge(latents: torch.Tensor) -> Dict[str, float]:
        with torch.no_grad():
            images = model_mod.unpack(latents).clamp(-1, 1)
            probs = classifier(images).softmax(-1)
            fd = model_mod.frechet_distance(classifier.features(images).double().numpy(), held_features)
        return {"fd": round(fd, 1), "class_accuracy": round(float((probs.argmax(-1) == wanted).float().mean()), 4)}

    def gen() -> torch.Generator:
        return torch.Generator().manual_seed(settings.seed)

    training = [*model_mod.flow_training_sigmas(), 0.0]
    results: Dict[str, Any] = {"samples_per_model": settings.eval_samples,
                               "student_training_sigmas": [round(s, 4) for s in training]}
    results["student_lcm_training_4"] = judge(sample_lcm(student, training, context, gen()))
    results["student_euler_training_4"] = judge(sample_euler(student, training, context, null_context, 1.0, gen()))
    results["student_lcm_1"] = judge(sample_lcm(student, [1.0, 0.0], context, gen()))
    for steps, guidance in ((4, settings.guidance), (50, settings.guidance), (50, 1.0)):
        sigmas = [model_mod.shifted(1 - j / steps) for j in range(steps)] + [0.0]  # ComfyUI's `simple`
        results[f"teacher_euler_{steps}_cfg{guidance:g}"] = judge(
            sample_euler(teacher, sigmas, context, null_context, guidance, gen()))
    results["wall_s"] = round(time.perf_counter() - start, 1)
    return results


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = shared.common_arguments(__doc__.splitlines()[0], teacher_seconds=600.0)
    p.add_argument("--reuse-teacher", action="store_true",
                   help="skip (a): take the flow teacher already in --out (distillation experiments)")
    p.add_argument("--student-batch", type=int, default=128)
    p.add_argument("--trajectory-seconds", type=float, default=240.0)
    p.add_argument("--trajectory-batches", type=int, default=40)
    p.add_argument("--trajectory-batch", type=int, default=512)
    p.add_argument("--substeps", type=int, default=8)
    p.add_argument("--student-seconds", type=float, default=360.0)
    p.add_argument("--student-steps", type=int, default=4000)
    p.add_argument("--student-lr", type=float, default=2e-4)
    p.add_argument("--guidance", type=float, default=None,
                   help="teacher CFG scale distilled into the student (default model.FLOW_GUIDANCE)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(seed=args.seed, batch=32, student_batch=32, teacher=Budget(4.0, 20),
                        trajectories=Budget(4.0, 2), student=Budget(4.0, 10), trajectory_batch=32, substeps=2,
                        teacher_lr=args.teacher_lr, student_lr=args.student_lr, cond_dropout=args.cond_dropout,
                        guidance=args.guidance, eval_samples=40)
    return Settings(seed=args.seed, batch=args.batch, student_batch=args.student_batch,
                    teacher=Budget(args.teacher_seconds, args.teacher_steps),
                    trajectories=Budget(args.trajectory_seconds, args.trajectory_batches),
                    student=Budget(args.student_seconds, args.student_steps), trajectory_batch=args.trajectory_batch,
                    substeps=args.substeps, teacher_lr=args.teacher_lr, student_lr=args.student_lr,
                    cond_dropout=args.cond_dropout, guidance=args.guidance, eval_samples=args.eval_samples)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    model_mod, _ = shared.import_modules(args.comfyui)
    if args.guidance is None:
        args.guidance = model_mod.FLOW_GUIDANCE
    settings = settings_from(args)
    start = time.perf_counter()
    load_before = os.getloadavg()
    train_x, train_y, held_x, _ = model_mod.digit_split()
    # The epsilon pair's committed table, frozen: DigitsConditioning serves all four models.
    table = model_mod.class_embedding()
    latents = model_mod.pack(train_x)
    logger.info("flow digits: %d training digits, shift %g, training sigmas %s; settings %s", len(train_x),
                model_mod.FLOW_SHIFT, [round(s, 4) for s in model_mod.flow_training_sigmas()], settings)

    if args.reuse_teacher:
        teacher = model_mod.load_unet_model("flow_teacher",
                                            weights=read_weights(args.out / model_mod.FLOW_TEACHER_FILE))
        teacher_report: Dict[str, Any] = {"reused_from": str(args.out)}
    else:
        teacher, teacher_report = train_teacher(model_mod, latents, train_y, table, settings)
    teacher.diffusion_model.eval().requires_grad_(False)
    data, trajectory_report = teacher_trajectories(model_mod, teacher.diffusion_model, table, settings)
    student, student_report = distill_student(model_mod, teacher, table, data, settings)

    metadata = {"source": "demo/train_flow_digits.py", "seed": str(settings.seed),
                "data": "scikit-learn digits (UCI ML hand-written digits, CC BY 4.0)", "license": "GPL-3.0-or-later",
                "prediction": "flow velocity (CONST), time = sigma * 1000", "shift": f"{model_mod.FLOW_SHIFT:g}"}
    args.out.mkdir(parents=True, exist_ok=True)
    shared.save(args.out / model_mod.FLOW_TEACHER_FILE, teacher.diffusion_model.state_dict(),
                {**metadata, "model": "rectified-flow teacher"})
    shared.save(args.out / model_mod.FLOW_STUDENT_FILE, student.diffusion_model.state_dict(),
                {**metadata, "model": "4-step flow student", "guidance_distilled": f"{settings.guidance:g}",
                 "training_sigmas": ", ".join(f"{s:.6g}" for s in model_mod.flow_training_sigmas())})
    read = {kind: model_mod.load_unet_model(kind, weights=read_weights(args.out / model_mod.UNET_FILES[kind]))
            .diffusion_model for kind in model_mod.FLOW_KINDS}
    figures = evaluate(model_mod, read["flow_teacher"], read["flow_student"], table, model_mod.load_classifier(),
                       held_x, settings)
    report = {
        "settings": dataclasses.asdict(settings),
        "shift": model_mod.FLOW_SHIFT,
        "training_sigmas": list(model_mod.flow_training_sigmas()),
        "parameters": {"unet": sum(p.numel() for p in read["flow_teacher"].parameters())},
        "teacher": teacher_report, "trajectories": trajectory_report, "student": student_report,
        "evaluation": figures,
    }
    return shared.write_report(args.out / "train_flow_report.json", report, start, load_before)


def read_weights(path: Path) -> Dict[str, torch.Tensor]:
    """A written file as the demo nodes load it (fp16 storage -> fp32)."""
    from safetensors.torch import load_file

    return {key: value.float() for key, value in load_file(str(path)).items()}


if __name__ == "__main__":
    main()
