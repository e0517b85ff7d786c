#!/usr/bin/env python3
"""Train the demo's tiny digit LCM on the CPU: teacher, classifier, consistency-distilled student.

    python demo/train_digits.py [--out DIR] [--seed 0] [--quick] [--comfyui TREE]

Needs the project's venv (torch, safetensors, scikit-learn) and a ComfyUI tree ($LCM_COMFYUI or
--comfyui): the UNet is ComfyUI's own SD1.5-family UNetModel (demo/lcm_digits/model.py), trained
directly. No download: the data is scikit-learn's bundled 8x8 digits.

Phases, each bounded by wall time AND by a step count, whichever comes first (the learning-rate
schedule follows that progress, so it runs to its end either way; `--*-seconds 0` leaves only the
step bound, for a deterministic run):
  (a) teacher: epsilon-prediction DDPM (Ho et al. 2020, the "simple" loss) on the 4x4x4 packed
      digits, class condition through cross-attention, condition dropout for classifier-free
      guidance (Ho & Salimans 2022); EMA of its weights.
  (b) classifier: a small CNN on the 8x8 digits; held-out accuracy; its 128-d penultimate features
      are the Frechet-distance feature space.
  (c) student: latent consistency distillation (Luo et al. 2023, Algorithm 1; Song et al. 2023,
      consistency distillation): skipping-step DDIM solver (Song et al. 2021) with k = 20 on the
      50-step grid, teacher CFG at a fixed scale, c_skip / c_out boundary condition (sigma_data
      0.5, timestep_scaling 10), EMA target network (decay 0.95), pseudo-Huber loss, student
      initialised from the teacher.
  (d) evaluation of the written (fp16-rounded) weights: classifier accuracy, and Frechet distance
      to the held-out digits for the teacher (DDIM) and the student (the pack's LCMScheduler).

Writes DIR/digits_{teacher_unet,lcm_student_unet,class_embedding,classifier}.safetensors and
DIR/train_report.json. The held-out split (model.HELD_OUT digits, model.SPLIT_SEED) is never
trained on. Seeded: step-bounded runs repeat bit for bit on the same machine and torch build;
time-bounded runs (the default) do as many steps as the machine manages in the time, so their
weights differ from run to run and machine to machine, with the same recipe and similar figures.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Passive OpenMP waiting, set before torch loads its OpenMP runtime: on 2 cores shared with other
# work, spinning threads made a training step up to 6x slower (9.6 s instead of 1.5 s, measured).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
logger = logging.getLogger("train_digits")

# Luo et al. 2023 / diffusers' LCM distillation defaults.
NUM_TRAIN_TIMESTEPS = 1000
DDIM_GRID = 50  # original_inference_steps: the solver's skipping-step grid
SKIP = NUM_TRAIN_TIMESTEPS // DDIM_GRID  # k = 20
TARGET_EMA = 0.95
HUBER_C = 0.001


@dataclasses.dataclass(frozen=True)
class Budget:
    """One phase's bounds: wall seconds (0 = none) and steps."""

    seconds: float
    steps: int


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int
    batch: int
    student_batch: int
    teacher: Budget
    classifier: Budget
    student: Budget
    teacher_lr: float
    student_lr: float
    cond_dropout: float
    guidance: float  # the teacher's CFG scale in distillation (w = guidance - 1 in LCM's notation)
    eval_samples: int  # per model and step count, balanced over the 10 digits
    teacher_evals: Tuple[Tuple[int, float], ...]  # (DDIM steps, CFG scale) pairs to evaluate


# ---------------------------------------------------------------------------------------------
# Set-up: ComfyUI on sys.path (CPU), then the demo's model module and the pack's lcm_core
# ---------------------------------------------------------------------------------------------


def import_modules(comfyui: Optional[str]) -> Tuple[Any, Any]:
    """(demo model module, lcm_core). ComfyUI's tree goes first on sys.path, CPU is forced."""
    tree = comfyui or os.environ.get("LCM_COMFYUI")
    if not tree or not (Path(tree) / "comfy").is_dir():
        raise SystemExit("train_digits: no ComfyUI tree; pass --comfyui TREE or set LCM_COMFYUI "
                         "(scripts/setup_env.sh prints COMFYUI=)")
    sys.path.insert(0, str(Path(tree).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before comfy.model_management is imported
    # After the tree (its nodes.py must stay ComfyUI's): the demo folder and the repo's lcm_core.
    sys.path.append(str(HERE))
    sys.path.append(str(REPO_ROOT))
    from lcm_digits import model

    import lcm_core

    return model, lcm_core


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


def init_weights_(module: torch.nn.Module, seed: int) -> None:
    """torch's default initialisation for ComfyUI's layers (comfy.ops.disable_weight_init skips
    it), then the UNet's output convolution zeroed, as in DDPM's UNet (zero_module)."""
    torch.manual_seed(seed)
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    for sub in module.modules():
        for kind in kinds:
            if isinstance(sub, kind):
                kind.reset_parameters(sub)  # the base class's, not ComfyUI's no-op override
                break
    out = getattr(module, "out", None)
    if out is not None:
        torch.nn.init.zeros_(out[-1].weight)
        torch.nn.init.zeros_(out[-1].bias)


def optimise_(optimizer: torch.optim.Optimizer, loss: torch.Tensor, lr: float) -> float:
    """One AdamW step at learning rate lr with gradient clipping at 1.0; returns the loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], 1.0)
    optimizer.step()
    return loss.item()


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to 10 % of the peak at progress 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def ema_update_(target: torch.nn.Module, source: torch.nn.Module, decay: float) -> None:
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, 1.0 - decay)


def run_phase(name: str, budget: Budget, step_fn: Callable[[int, float], float]) -> Dict[str, Any]:
    """Run step_fn(step, progress) -> loss until the budget is spent.

    progress = max(steps done / budget.steps, seconds spent / budget.seconds) in [0, 1]: whichever
    bound comes first ends the phase, and the learning-rate schedule (a function of progress)
    reaches its end either way, however the speed of a shared machine varies during the run.
    With budget.seconds = 0 only the step bound counts, and a run is deterministic (same
    machine, same torch).
    """
    start = time.perf_counter()
    losses: List[float] = []
    step, progress, logged = 0, 0.0, 0
    while progress < 1.0:
        losses.append(step_fn(step, progress))
        step += 1
        elapsed = time.perf_counter() - start
        progress = step / budget.steps
        if budget.seconds > 0:
            progress = max(progress, elapsed / budget.seconds)
        if int(progress * 10) > logged or progress >= 1.0:
            logged = int(progress * 10)
            logger.info("%s: step %d (%.0f %% of the budget) loss %.4f, %.0f s, %.0f ms/step", name, step,
                        100 * min(1.0, progress), float(np.mean(losses[-50:])), elapsed, 1000 * elapsed / step)
    wall = time.perf_counter() - start
    return {"steps": step, "wall_s": round(wall, 1), "ms_per_step": round(1000 * wall / step, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 5), "budget": dataclasses.asdict(budget)}


# ---------------------------------------------------------------------------------------------
# (a) the epsilon teacher
# ---------------------------------------------------------------------------------------------


class DiffusionMaths:
    """alpha_bar of SD's scaled_linear schedule (lcm_core, = diffusers) and the formulas on it."""

    def __init__(self, lcm_core: Any) -> None:
        self.lcm_core = lcm_core
        self.config = lcm_core.LCMConfig()  # beta 0.00085..0.012, scaled_linear, 1000 steps
        self.alpha_bar = lcm_core.alphas_cumprod(self.config)

    def coefficients(self, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) shaped (B, 1, 1, 1)."""
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        return a.sqrt(), (1.0 - a).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) = N(sqrt(abar) x0, (1 - abar) I) (Ho et al. 2020, eq. 4)."""
        a, s = self.coefficients(t)
        return a * x0 + s * noise

    def x0_from_eps(self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.coefficients(t)
        return (x_t - s * eps) / a

    def boundary(self, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """c_skip(t), c_out(t) (Song et al. 2023; LCM's discrete form, timestep_scaling 10), (B,1,1,1)."""
        c_skip, c_out = self.lcm_core.boundary_condition_scalings(t, self.config.timestep_scaling)
        return c_skip.view(-1, 1, 1, 1), c_out.view(-1, 1, 1, 1)


def train_teacher(model_mod: Any, maths: DiffusionMaths, data: torch.Tensor, labels: torch.Tensor,
                  settings: Settings) -> Tuple[Any, torch.Tensor, Dict[str, Any]]:
    """Returns (EMA teacher BaseModel, class embedding table, report)."""
    base = model_mod.build_unet_model()
    unet = base.diffusion_model
    init_weights_(unet, settings.seed)
    unet.train().requires_grad_(True)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    table = torch.nn.Parameter(torch.randn(model_mod.NUM_DIGITS + 1, model_mod.CONTEXT_DIM, generator=gen))
    ema_unet = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_table = table.detach().clone()
    optimizer = torch.optim.AdamW([*unet.parameters(), table], lr=settings.teacher_lr, weight_decay=0.0)
    latents = model_mod.pack(data)

    def step(i: int, progress: float) -> float:
        idx = torch.randint(0, len(latents), (settings.batch,), generator=gen)
        x0 = latents[idx]
        rows = labels[idx].clone()
        rows[torch.rand(settings.batch, generator=gen) < settings.cond_dropout] = model_mod.NULL_ROW
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (settings.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        eps = unet(maths.add_noise(x0, noise, t), t.float(), context=model_mod.context_for(rows, table))
        loss = torch.nn.functional.mse_loss(eps, noise)  # L_simple (Ho et al. 2020, eq. 14)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, progress, settings.teacher_lr, warmup=100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), table], 1.0)
        optimizer.step()
        decay = min(0.995, (1 + i) / (10 + i))  # EMA with warm-up
        ema_update_(ema_unet, unet, decay)
        with torch.no_grad():
            ema_table.lerp_(table, 1.0 - decay)
        return loss.item()

    report = run_phase("teacher", settings.teacher, step)
    base.diffusion_model = ema_unet
    return base, ema_table, report


# ---------------------------------------------------------------------------------------------
# (b) the digit classifier (the quality metric)
# ---------------------------------------------------------------------------------------------


def random_shift(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by -1..1 pixels in x and y (background -1 fills the gap)."""
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), value=-1.0)
    dy, dx = torch.randint(0, 3, (2, len(images)), generator=gen)
    rows = (torch.arange(8)[None, :] + dy[:, None])[:, None, :, None].expand(-1, 1, 8, 10)
    shifted = torch.gather(padded, 2, rows)
    cols = (torch.arange(8)[None, :] + dx[:, None])[:, None, None, :].expand(-1, 1, 8, 8)
    return torch.gather(shifted, 3, cols)


def train_classifier(model_mod: Any, data: torch.Tensor, labels: torch.Tensor, held: torch.Tensor,
                     held_labels: torch.Tensor, settings: Settings) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    torch.manual_seed(settings.seed + 2)
    classifier = model_mod.DigitClassifier().train()
    gen = torch.Generator().manual_seed(settings.seed + 2)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=2e-3, weight_decay=1e-4)

    def step(i: int, progress: float) -> float:
        idx = torch.randint(0, len(data), (128,), generator=gen)
        logits = classifier(random_shift(data[idx], gen))
        loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, progress, 2e-3, warmup=50)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    report = run_phase("classifier", settings.classifier, step)
    classifier.eval().requires_grad_(False)
    return classifier, report


# ---------------------------------------------------------------------------------------------
# (c) latent consistency distillation
# ---------------------------------------------------------------------------------------------


def distill_student(model_mod: Any, maths: DiffusionMaths, teacher: Any, table: torch.Tensor, data: torch.Tensor,
                    labels: torch.Tensor, settings: Settings) -> Tuple[Any, Dict[str, Any]]:
    """LCD (Luo et al. 2023, Algorithm 1) with a fixed CFG scale: the student runs at cfg 1."""
    teacher_unet = teacher.diffusion_model.eval().requires_grad_(False)
    student_base = model_mod.build_unet_model()
    student_base.diffusion_model.load_state_dict(teacher_unet.state_dict())  # student = teacher at start
    student = student_base.diffusion_model.train().requires_grad_(True)
    target = copy.deepcopy(student).eval().requires_grad_(False)  # the EMA "target network" theta^-
    optimizer = torch.optim.AdamW(student.parameters(), lr=settings.student_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(settings.seed + 3)
    latents = model_mod.pack(data)
    null_context = table[model_mod.NULL_ROW].expand(settings.student_batch, 1, -1)

    def step(i: int, progress: float) -> float:
        idx = torch.randint(0, len(latents), (settings.student_batch,), generator=gen)
        x0 = latents[idx]
        rows = labels[idx].clone()
        # Some null rows, so that the student's "no digit" condition draws any digit.
        rows[torch.rand(settings.student_batch, generator=gen) < 0.1] = model_mod.NULL_ROW
        context = model_mod.context_for(rows, table)
        # t_{n+k} on the 50-step grid (19, 39, ..., 999) and t_n = t_{n+k} - k (0 at the bottom).
        n = torch.randint(0, DDIM_GRID, (settings.student_batch,), generator=gen)
        t_start = (n + 1) * SKIP - 1
        t_prev = (t_start - SKIP).clamp(min=0)
        x_start = maths.add_noise(x0, torch.randn(x0.shape, generator=gen), t_start)

        # Online network: f_theta(x_{t_{n+k}}, t_{n+k}) = c_skip x + c_out x0_hat.
        c_skip, c_out = maths.boundary(t_start)
        eps = student(x_start, t_start.float(), context=context)
        online = c_skip * x_start + c_out * maths.x0_from_eps(x_start, eps, t_start)

        with torch.no_grad():
            # Teacher with CFG (eps_u + g (eps_c - eps_u)), then one DDIM step t_{n+k} -> t_n
            # (Song et al. 2021, eq. 12 with eta = 0): the "augmented PF-ODE solver" of LCM.
            eps_c, eps_u = teacher_unet(torch.cat([x_start, x_start]), torch.cat([t_start, t_start]).float(),
                                        context=torch.cat([context, null_context])).chunk(2)
            eps_g = eps_u + settings.guidance * (eps_c - eps_u)
            x0_g = maths.x0_from_eps(x_start, eps_g, t_start)
            a_prev, s_prev = maths.coefficients(t_prev)
            x_prev = a_prev * x0_g + s_prev * eps_g
            # Target network at t_n.
            c_skip_p, c_out_p = maths.boundary(t_prev)
            eps_t = target(x_prev, t_prev.float(), context=context)
            goal = c_skip_p * x_prev + c_out_p * maths.x0_from_eps(x_prev, eps_t, t_prev)

        # Pseudo-Huber distance (Song & Dhariwal 2023; diffusers' LCM scripts, c = 0.001).
        loss = (torch.sqrt((online - goal) ** 2 + HUBER_C**2) - HUBER_C).mean()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(i, progress, settings.student_lr, warmup=50)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        ema_update_(target, student, TARGET_EMA)
        return loss.item()

    report = run_phase("student", settings.student, step)
    # The distilled model is the online network (diffusers' LCM scripts save the EMA "target_unet"
    # with decay 0.95, which after a few hundred steps is the online network to within the noise).
    student.eval().requires_grad_(False)
    return student_base, report


# ---------------------------------------------------------------------------------------------
# (d) sampling and the Frechet distance
# ---------------------------------------------------------------------------------------------


def ddim_timesteps(steps: int) -> List[int]:
    """Evenly spaced from 999 ("trailing" spacing), e.g. 4 steps: 999, 749, 499, 249."""
    return [int(round(NUM_TRAIN_TIMESTEPS - 1 - i * NUM_TRAIN_TIMESTEPS / steps)) for i in range(steps)]


@torch.no_grad()
def sample_ddim(unet: torch.nn.Module, maths: DiffusionMaths, context: torch.Tensor, null_context: torch.Tensor,
                guidance: float, steps: int, gen: torch.Generator) -> torch.Tensor:
    """Deterministic DDIM (Song et al. 2021, eq. 12, eta = 0) with CFG; the last step goes to x0."""
    x = torch.randn(len(context), 4, 4, 4, generator=gen)
    timesteps = ddim_timesteps(steps)
    for i, t in enumerate(timesteps):
        tt = torch.full((len(x),), t, dtype=torch.int64)
        if guidance == 1.0:
            eps = unet(x, tt.float(), context=context)
        else:
            eps_c, eps_u = unet(torch.cat([x, x]), torch.cat([tt, tt]).float(),
                                context=torch.cat([context, null_context])).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        x0 = maths.x0_from_eps(x, eps, tt)
        if i + 1 < len(timesteps):
            a, s = maths.coefficients(torch.full_like(tt, timesteps[i + 1]))
            x = a * x0 + s * eps
        else:
            x = x0
    return x


@torch.no_grad()
def sample_lcm(unet: torch.nn.Module, lcm_core: Any, context: torch.Tensor, steps: int,
               gen: torch.Generator) -> torch.Tensor:
    """The pack's LCMScheduler (= diffusers'), cfg 1: LCM multistep sampling (Luo et al. 2023, Alg. 3)."""
    scheduler = lcm_core.LCMScheduler()
    scheduler.set_timesteps(steps)
    x = torch.randn(len(context), 4, 4, 4, generator=gen)
    for t in scheduler.timesteps:
        eps = unet(x, t.float().expand(len(x)), context=context)
        x = scheduler.step(eps, t, x, generator=gen).prev_sample
    return x


def evaluate(model_mod: Any, lcm_core: Any, maths: DiffusionMaths, teacher: torch.nn.Module,
             student: torch.nn.Module, table: torch.Tensor, classifier: torch.nn.Module, train_x: torch.Tensor,
             held_x: torch.Tensor, held_y: torch.Tensor, settings: Settings) -> Dict[str, Any]:
    start = time.perf_counter()

    def features(images: torch.Tensor) -> np.ndarray:
        return classifier.features(images).double().numpy()

    def judge(latents: torch.Tensor, wanted: torch.Tensor) -> Dict[str, float]:
        images = model_mod.unpack(latents).clamp(-1, 1)
        probs = classifier(images).softmax(-1)
        return {
            "fd": round(model_mod.frechet_distance(features(images), held_features), 1),
            "class_accuracy": round(float((probs.argmax(-1) == wanted).float().mean()), 4),
            "mean_confidence": round(float(probs.gather(1, wanted[:, None]).mean()), 4),
        }

    with torch.no_grad():
        held_features = features(held_x)
        accuracy = float((classifier(held_x).argmax(-1) == held_y).float().mean())
        pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(settings.seed))[:len(held_x)]
        wanted = torch.arange(settings.eval_samples) % model_mod.NUM_DIGITS
        context = model_mod.context_for(wanted, table)
        null_context = table[model_mod.NULL_ROW].expand(len(wanted), 1, -1)
        results: Dict[str, Any] = {
            "classifier_held_out_accuracy": round(accuracy, 4),
            "fd_train_vs_held_out": round(model_mod.frechet_distance(features(train_x[pick]), held_features), 1),
            "samples_per_model": settings.eval_samples,
        }
        for steps in (1, 2, 4):
            results[f"student_lcm_{steps}"] = judge(
                sample_lcm(student, lcm_core, context, steps, torch.Generator().manual_seed(settings.seed)), wanted)
        for steps, guidance in settings.teacher_evals:
            results[f"teacher_ddim_{steps}_cfg{guidance:g}"] = judge(sample_ddim(
                teacher, maths, context, null_context, guidance, steps, torch.Generator().manual_seed(settings.seed)),
                wanted)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    return results


# ---------------------------------------------------------------------------------------------
# Writing the weights
# ---------------------------------------------------------------------------------------------


def save(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    from safetensors.torch import save_file

    # fp16 storage (half the size); every reader computes in fp32.
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    save_file(half, str(path), metadata=metadata)


def write_weights(model_mod: Any, out: Path, teacher: torch.nn.Module, student: torch.nn.Module,
                  table: torch.Tensor, classifier: torch.nn.Module, metadata: Dict[str, str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save(out / model_mod.TEACHER_FILE, teacher.state_dict(), {**metadata, "model": "epsilon teacher"})
    save(out / model_mod.STUDENT_FILE, student.state_dict(), {**metadata, "model": "LCM student"})
    save(out / model_mod.EMBEDDING_FILE, {model_mod.EMBEDDING_KEY: table}, {**metadata, "model": "class embedding"})
    save(out / model_mod.CLASSIFIER_FILE, classifier.state_dict(), {**metadata, "model": "digit classifier"})


def read_back(model_mod: Any, out: Path) -> Tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.nn.Module]:
    """The written files, loaded the way the demo nodes load them (fp16 -> fp32)."""
    from safetensors.torch import load_file

    def load(name: str) -> Dict[str, torch.Tensor]:
        return {k: v.float() for k, v in load_file(str(out / name)).items()}

    teacher = model_mod.load_unet_model(weights=load(model_mod.TEACHER_FILE)).diffusion_model
    student = model_mod.load_unet_model(weights=load(model_mod.STUDENT_FILE)).diffusion_model
    table = model_mod.class_embedding(load(model_mod.EMBEDDING_FILE))
    classifier = model_mod.load_classifier(load(model_mod.CLASSIFIER_FILE))
    return teacher, student, table, classifier


# ---------------------------------------------------------------------------------------------


def common_arguments(description: str, teacher_seconds: float) -> argparse.ArgumentParser:
    """The options this script shares with demo/train_flow_digits.py."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", type=Path, default=HERE / "lcm_digits" / "models", help="folder for the weights")
    p.add_argument("--comfyui", default=None, help="ComfyUI tree (default $LCM_COMFYUI)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smoke run of a few seconds per phase")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--batch", type=int, default=128, help="teacher batch")
    p.add_argument("--teacher-seconds", type=float, default=teacher_seconds)
    p.add_argument("--teacher-steps", type=int, default=6000)
    p.add_argument("--teacher-lr", type=float, default=1e-3)
    p.add_argument("--cond-dropout", type=float, default=0.15)
    p.add_argument("--eval-samples", type=int, default=1000)
    return p


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = common_arguments(__doc__.splitlines()[0], teacher_seconds=540.0)
    p.add_argument("--reuse", type=Path, default=None,
                   help="skip (a) and (b): take the teacher, embedding and classifier from this folder")
    p.add_argument("--student-batch", type=int, default=64)
    p.add_argument("--classifier-seconds", type=float, default=30.0)
    p.add_argument("--classifier-steps", type=int, default=1500)
    p.add_argument("--student-seconds", type=float, default=480.0)
    p.add_argument("--student-steps", type=int, default=4000)
    p.add_argument("--student-lr", type=float, default=3e-4)
    p.add_argument("--guidance", type=float, default=4.0,
                   help="teacher CFG scale distilled into the student (w = guidance - 1)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(seed=args.seed, batch=32, student_batch=32, teacher=Budget(4.0, 20), classifier=Budget(2.0, 20),
                        student=Budget(4.0, 10), teacher_lr=args.teacher_lr, student_lr=args.student_lr,
                        cond_dropout=args.cond_dropout, guidance=args.guidance, eval_samples=40,
                        teacher_evals=((4, args.guidance),))
    return Settings(seed=args.seed, batch=args.batch, student_batch=args.student_batch,
                    teacher=Budget(args.teacher_seconds, args.teacher_steps),
                    classifier=Budget(args.classifier_seconds, args.classifier_steps),
                    student=Budget(args.student_seconds, args.student_steps),
                    teacher_lr=args.teacher_lr, student_lr=args.student_lr, cond_dropout=args.cond_dropout,
                    guidance=args.guidance, eval_samples=args.eval_samples,
                    teacher_evals=((4, args.guidance), (50, args.guidance), (50, 1.0)))


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    settings = settings_from(args)
    model_mod, lcm_core = import_modules(args.comfyui)
    maths = DiffusionMaths(lcm_core)
    start = time.perf_counter()
    load_before = os.getloadavg()
    train_x, train_y, held_x, held_y = model_mod.digit_split()
    logger.info("data: %d training, %d held-out digits; settings %s", len(train_x), len(held_x), settings)

    if args.reuse is None:
        teacher, table, teacher_report = train_teacher(model_mod, maths, train_x, train_y, settings)
        classifier, classifier_report = train_classifier(model_mod, train_x, train_y, held_x, held_y, settings)
    else:  # distillation experiments on an earlier run's teacher and classifier
        teacher_net, _, table, classifier = read_back(model_mod, args.reuse)
        teacher = model_mod.build_unet_model()
        teacher.diffusion_model = teacher_net
        teacher_report = classifier_report = {"reused_from": str(args.reuse)}
    student, student_report = distill_student(model_mod, maths, teacher, table, train_x, train_y, settings)

    metadata = {"source": "demo/train_digits.py", "seed": str(settings.seed),
                "data": "scikit-learn digits (UCI ML hand-written digits, CC BY 4.0)",
                "license": "GPL-3.0-or-later", "guidance_distilled": f"{settings.guidance:g}"}
    write_weights(model_mod, args.out, teacher.diffusion_model, student.diffusion_model, table, classifier, metadata)
    teacher_net, student_net, table_read, classifier_read = read_back(model_mod, args.out)
    figures = evaluate(model_mod, lcm_core, maths, teacher_net, student_net, table_read, classifier_read,
                       train_x, held_x, held_y, settings)
    report = {
        "settings": dataclasses.asdict(settings),
        "parameters": {"unet": sum(p.numel() for p in teacher_net.parameters()),
                       "class_embedding": table_read.numel(),
                       "classifier": sum(p.numel() for p in classifier_read.parameters())},
        "teacher": teacher_report, "classifier": classifier_report, "student": student_report,
        "evaluation": figures,
    }
    return write_report(args.out / "train_report.json", report, start, load_before)


def write_report(path: Path, report: Dict[str, Any], start: float, load_before: Sequence[float]) -> Dict[str, Any]:
    """The report with the run's wall time, load and machine added, written as JSON and logged."""
    report = {**report,
              "total_wall_s": round(time.perf_counter() - start, 1),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version(), "processor": platform.machine()}}
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    logger.info("report:\n%s", json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
