"""The exact samplers and the LCM timesteps in ComfyUI's plain KSampler and KSamplerAdvanced.

ComfyUI has no registration API for samplers or schedulers; its lists are module globals
that packs extend in place (comfy/samplers.py):
- a sampler name ``x`` in ``SAMPLER_NAMES`` (what KSampler and KSamplerSelect list; the
  nodes hold that very list object) is resolved by ``ksampler(x)`` as
  ``comfy.k_diffusion.sampling.sample_x``; ``KSAMPLER_NAMES`` is the same list without
  ComfyUI's own non-k-diffusion samplers;
- a scheduler name is looked up in ``SCHEDULER_HANDLERS`` (name -> SchedulerHandler) and
  listed from ``SCHEDULER_NAMES`` (again the list object KSampler holds). Trees from before
  2025 have no ``SCHEDULER_HANDLERS`` (an if / elif chain that falls back to an error), so
  the scheduler is not offered there.

KSampler passes the graph's seed in ``extra_args``, so the pack's CPU noise stream (diffusers'
draw order) works there as in SamplerCustom. Registration is idempotent, appends (other packs'
entries stay where they are), never replaces a name it did not add, and logs one line.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Callable, Dict, List, Tuple

import torch

from ..lcm_core import DEFAULT_GAMMA, LCMConfig, lcm_timesteps
from . import flow, host
from .sampler import sample_lcm_multistep, sample_tcd

logger = logging.getLogger(__name__)

# Marks what this pack put into ComfyUI's modules, so a second load (the pack imported under
# another name, or reloaded) recognises its own entries and adds nothing.
_OURS = "_lcm_multistep"
LCM_SCHEDULER = "lcm_diffusers"
_DEFAULT_CONFIG = LCMConfig()


def _ours(function: Callable[..., Any]) -> Callable[..., Any]:
    setattr(function, _OURS, True)
    return function


@_ours
def sample_lcm_diffusers(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Any = None,
                         callback: Any = None, disable: Any = None) -> torch.Tensor:
    """LCMSampler with diffusers' default LCMScheduler settings (FlowMatchLCMScheduler's step on a flow
    model), for KSampler's sampler list."""
    return sample_lcm_multistep(model, x, sigmas, extra_args, callback, disable, config=_DEFAULT_CONFIG)


@_ours
def sample_tcd_diffusers(model: Any, x: torch.Tensor, sigmas: torch.Tensor, extra_args: Any = None,
                         callback: Any = None, disable: Any = None) -> torch.Tensor:
    """TCDSampler at gamma 0.3 (TCDScheduler.step's default eta, the TCD-LoRA card's value), for KSampler."""
    return sample_tcd(model, x, sigmas, extra_args, callback, disable, config=_DEFAULT_CONFIG, gamma=DEFAULT_GAMMA)


@_ours
def lcm_diffusers_scheduler(model_sampling: Any, steps: int) -> torch.Tensor:
    """diffusers' LCMScheduler timesteps (original_inference_steps 50) as the model's own sigmas, then 0;
    on a flow-matching model, FlowMatchLCMScheduler's sigmas as the model family's pipeline asks for them.

    KSampler asks for int(steps / denoise) steps when denoise < 1 and runs the last ``steps``.
    """
    if host.is_flow(model_sampling):
        try:
            return flow.schedule_for(model_sampling, int(steps)).sigmas
        except ValueError as error:
            raise ValueError(f"scheduler {LCM_SCHEDULER} ({steps} steps, flow model with "
                             f"{host.describe_sampling(model_sampling)}, shift {model_sampling.shift}): "
                             f"{error}") from None
    host.require_discrete(model_sampling, f"the scheduler {LCM_SCHEDULER}")
    config = LCMConfig(num_train_timesteps=int(model_sampling.num_timesteps))
    try:
        timesteps = lcm_timesteps(config, int(steps))
    except ValueError as error:
        raise ValueError(f"scheduler {LCM_SCHEDULER}: {error}. KSampler's denoise d asks it for int(steps / d) "
                         f"steps, here {steps}; the LCM grid has {config.original_inference_steps}") from None
    sigmas = host.sigmas_at(model_sampling, timesteps)
    return torch.cat([sigmas, sigmas.new_zeros(1)])


# name -> the k-diffusion-contract function KSampler runs.
SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {"lcm_diffusers": sample_lcm_diffusers,
                                                    "tcd_diffusers": sample_tcd_diffusers}


@dataclasses.dataclass(frozen=True)
class Registration:
    """What one call of ``register`` did: names added now, names already there from this pack, and
    names it left alone (taken by ComfyUI or another pack, or not supported by this tree)."""

    added: Tuple[str, ...]
    present: Tuple[str, ...]
    skipped: Tuple[str, ...]


def register() -> Registration:
    """Add the pack's samplers and scheduler to the lists of the ComfyUI that is loading the pack.

    ComfyUI imports comfy.samplers (nodes.py does) before any custom node; the pack only uses
    the modules already loaded and imports none itself, so outside ComfyUI this does nothing.
    """
    scheduler = f"scheduler {LCM_SCHEDULER}"
    samplers = sys.modules.get("comfy.samplers")
    k_sampling = sys.modules.get("comfy.k_diffusion.sampling")
    if samplers is None or k_sampling is None:
        return Registration((), (), tuple(f"sampler {name}" for name in SAMPLERS) + (scheduler,))
    added: List[str] = []
    present: List[str] = []
    skipped: List[str] = []
    for name, function in SAMPLERS.items():
        existing = getattr(k_sampling, f"sample_{name}", None)
        if existing is not None and not getattr(existing, _OURS, False):
            skipped.append(f"sampler {name}")
            continue
        if existing is None:
            setattr(k_sampling, f"sample_{name}", function)
        newly = _append_once(samplers.KSAMPLER_NAMES, name) | _append_once(samplers.SAMPLER_NAMES, name)
        (added if newly or existing is None else present).append(f"sampler {name}")
    handlers = getattr(samplers, "SCHEDULER_HANDLERS", None)
    existing = None if handlers is None else handlers.get(LCM_SCHEDULER)
    if handlers is None or (existing is not None and not getattr(existing.handler, _OURS, False)):
        skipped.append(scheduler)
    else:
        if existing is None:
            handlers[LCM_SCHEDULER] = samplers.SchedulerHandler(lcm_diffusers_scheduler)
        newly = _append_once(samplers.SCHEDULER_NAMES, LCM_SCHEDULER)
        (added if newly or existing is None else present).append(scheduler)
    result = Registration(tuple(added), tuple(present), tuple(skipped))
    _log(result, scheduler_supported=handlers is not None)
    return result


def _append_once(names: List[str], name: str) -> bool:
    if name in names:
        return False
    names.append(name)
    return True


def _log(result: Registration, scheduler_supported: bool) -> None:
    if result.added:
        message = f"LCM Multistep: KSampler now lists {', '.join(result.added)}"
    elif result.present:
        message = f"LCM Multistep: KSampler already lists {', '.join(result.present)}"
    else:
        message = "LCM Multistep: nothing added to KSampler's lists"
    taken = [name for name in result.skipped if scheduler_supported or not name.startswith("scheduler ")]
    if taken:
        message += f"; left alone (the name is taken by ComfyUI or another pack): {', '.join(taken)}"
    if not scheduler_supported:
        message += (f"; the scheduler {LCM_SCHEDULER} needs a ComfyUI with comfy.samplers.SCHEDULER_HANDLERS "
                    "(2025 or newer): use LCMTimesteps with SamplerCustom here")
    (logger.warning if result.skipped else logger.info)(message)
