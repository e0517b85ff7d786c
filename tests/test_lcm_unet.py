"""Full LCM UNets in a real ComfyUI: the guidance embedding restored by LCMUNetLoader.

One tiny SD1.5-detectable UNet with diffusers' ``time_cond_proj_dim`` = 256
(scripts/make_tiny_lcm_unet.py: model_channels 320, context 768, one level, 18.8M
parameters) runs in diffusers' ``UNet2DConditionModel`` with ``timestep_cond`` and, from an
SD-layout safetensors file in models/diffusion_models, in ComfyUI through this pack's loader.
Checked against diffusers: the w embedding bit for bit, UNet outputs (1e-5, float32), the
LatentConsistencyModelPipeline end to end (1e-4), and ComfyUI's model management: clones,
LoRA weight patches, low-VRAM partial loading, fp16 / bf16 / fp8 storage, ModelSave.
"""

from __future__ import annotations

import copy
import logging
import os

import diffusers
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import comfy_host
from lcm_core.guidance import DIFFUSERS, ORIGINAL, guidance_scale_embedding, guidance_w

UNET_ATOL = 1e-5
LATENT_ATOL = 1e-4
LCM_FILE = "tiny-lcm-unet.safetensors"
PLAIN_FILE = "tiny-unet-no-cond-proj.safetensors"
LOADER_LOGGER = "lcm_multistep.nodes.lcm_unet"
TIME_EMBED = "diffusion_model.time_embed"
TIMESTEPS = (999, 759, 499, 259, 19)
FULL_SIZE_ENV = "LCM_TEST_FULL_SIZE"

X = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
CONTEXT = torch.randn(2, 7, 768, generator=torch.Generator().manual_seed(2))
POSITIVE = torch.randn(1, 7, 768, generator=torch.Generator().manual_seed(3))
NEGATIVE = torch.randn(1, 7, 768, generator=torch.Generator().manual_seed(4))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread while this module runs.

    These are small ops; on the shared 2-core machines OpenMP's second thread spin-waits
    against other processes: one forward of this UNet took 1.47 s with 2 threads and 0.045 s
    with 1 (measured while another process held a core).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lcm(comfy):
    """(diffusers LCM UNet, SD-layout state dict with the cond_proj weight under its diffusers name)."""
    return comfy_host.load_script("make_tiny_lcm_unet").tiny_lcm_unet(seed=0)


@pytest.fixture(scope="module")
def unet_folder(comfy, lcm, tmp_path_factory):
    """A models/diffusion_models folder registered with folder_paths, holding the LCM file and one without cond_proj."""
    import folder_paths

    _, sd = lcm
    folder = tmp_path_factory.mktemp("diffusion_models")
    save_file(sd, str(folder / LCM_FILE))
    save_file({k: v for k, v in sd.items() if "cond_proj" not in k}, str(folder / PLAIN_FILE))
    folder_paths.add_model_folder_path("diffusion_models", str(folder))
    folder_paths.filename_list_cache.pop("diffusion_models", None)
    yield folder
    folder_paths.folder_names_and_paths["diffusion_models"][0].remove(str(folder))
    folder_paths.filename_list_cache.pop("diffusion_models", None)


@pytest.fixture(scope="module")
def lcm_unet(pack):
    return pack.nodes.lcm_unet


@pytest.fixture(scope="module")
def loaded(nodes, unet_folder):
    """LCMUNetLoader with its default widgets (guidance 8.5, diffusers' w = 7.5)."""
    return nodes.LCMUNetLoader().load(LCM_FILE, "default", 8.5, DIFFUSERS)[0]


def comfy_unet(comfy, model, t, x=X, context=CONTEXT):
    """The UNet output of a MODEL, loaded the way sampling loads it (object patches swapped in)."""
    comfy.model_management.load_models_gpu([model])
    with torch.no_grad():
        return model.model.diffusion_model(x, timesteps=torch.full((x.shape[0],), t), context=context)


def diffusers_unet(unet, t, w, x=X, context=CONTEXT):
    """diffusers' LCM UNet call: timestep_cond is the pipeline's own w embedding."""
    embed = diffusers.LatentConsistencyModelPipeline.get_guidance_scale_embedding
    w_embedding = embed(None, torch.tensor(w).repeat(x.shape[0]), embedding_dim=unet.config.time_cond_proj_dim)
    with torch.no_grad():
        return unet(x, torch.full((x.shape[0],), t), encoder_hidden_states=context, timestep_cond=w_embedding).sample


def max_diff(a, b):
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------
# The w embedding (lcm_core.guidance, no ComfyUI)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dim", [256, 255, 320, 5, 4])
def test_w_embedding_is_diffusers_bit_for_bit(dim):
    ws = [7.5, 0.0, -1.0, 3.25, 13.0, 0.1]
    ours = guidance_scale_embedding(ws, dim)
    reference = diffusers.LatentConsistencyModelPipeline.get_guidance_scale_embedding(
        None, torch.tensor(ws), embedding_dim=dim)
    assert ours.dtype == torch.float32 and ours.shape == (len(ws), dim)
    assert torch.equal(ours, reference)
    assert torch.equal(guidance_scale_embedding(7.5, dim), reference[:1])


def test_w_conventions_and_errors():
    assert guidance_w(8.5) == 7.5 and guidance_w(8.5, DIFFUSERS) == 7.5
    assert guidance_w(8.0, ORIGINAL) == 8.0
    with pytest.raises(ValueError, match="w_convention"):
        guidance_w(8.5, "cfg")
    with pytest.raises(ValueError, match="guidance_scale"):
        guidance_w(float("nan"))
    with pytest.raises(ValueError, match="embedding_dim"):
        guidance_scale_embedding(1.0, 3)


# ---------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------

def test_registration_and_widgets(comfy, pack, unet_folder):
    mappings = pack.NODE_CLASS_MAPPINGS
    for node_id in ("LCMUNetLoader", "LCMGuidanceEmbedding"):
        node = mappings[node_id]
        assert node_id in pack.NODE_DISPLAY_NAME_MAPPINGS
        assert node.RETURN_TYPES == ("MODEL",) and len(node.OUTPUT_TOOLTIPS) == 1
        assert node.CATEGORY == "sampling/custom_sampling/lcm"
        assert "cfg at 1" in node.DESCRIPTION
        inputs = node.INPUT_TYPES()["required"]
        for name, spec in inputs.items():
            assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert inputs["guidance_scale"][1]["default"] == 8.5
        assert inputs["w_convention"][0] == [DIFFUSERS, ORIGINAL] and inputs["w_convention"][1]["default"] == DIFFUSERS
        assert "cfg at 1" in inputs["guidance_scale"][1]["tooltip"]
    loader_inputs = mappings["LCMUNetLoader"].INPUT_TYPES()["required"]
    assert {LCM_FILE, PLAIN_FILE} <= set(loader_inputs["unet_name"][0])
    # The same weight_dtype choices as ComfyUI's own UNETLoader.
    assert loader_inputs["weight_dtype"][0] == comfy.nodes.UNETLoader.INPUT_TYPES()["required"]["weight_dtype"][0]


@pytest.mark.parametrize("guidance_scale,convention,w", [
    (8.5, DIFFUSERS, 7.5),
    (1.0, DIFFUSERS, 0.0),
    (4.0, ORIGINAL, 4.0),
])
def test_unet_matches_diffusers(comfy, nodes, lcm, unet_folder, guidance_scale, convention, w):
    unet, _ = lcm
    model = nodes.LCMUNetLoader().load(LCM_FILE, "default", guidance_scale, convention)[0]
    diffs = [max_diff(comfy_unet(comfy, model, t), diffusers_unet(unet, t, w)) for t in TIMESTEPS]
    logging.getLogger(__name__).info("UNet max abs diff at w=%g over t=%s: %s", w, TIMESTEPS, diffs)
    assert max(diffs) < UNET_ATOL


def test_comfyui_alone_drops_the_embedding(comfy, lcm, loaded, unet_folder):
    """Why the loader exists: the built-in loader gives another network (w ignored)."""
    unet, _ = lcm
    plain = comfy.sd.load_diffusion_model(str(unet_folder / LCM_FILE))
    assert max_diff(comfy_unet(comfy, plain, 499), diffusers_unet(unet, 499, 7.5)) > 1e-2
    assert max_diff(comfy_unet(comfy, loaded, 499), diffusers_unet(unet, 499, 7.5)) < UNET_ATOL


def _lcm_pipeline(unet):
    pipe = diffusers.LatentConsistencyModelPipeline(
        vae=diffusers.AutoencoderKL(**comfy_host.TINY_VAE_DIFFUSERS), text_encoder=None, tokenizer=None, unet=unet,
        scheduler=diffusers.LCMScheduler(), safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("seed,guidance_scale", [(0, 8.5), (42, 3.0)])
def test_end_to_end_matches_lcm_pipeline(comfy, nodes, lcm, loaded, seed, guidance_scale):
    """SamplerCustom + LCMTimesteps + LCMSampler at cfg 1 on the loader's MODEL == LatentConsistencyModelPipeline."""
    unet, _ = lcm
    latent_size, steps = 16, 4
    model = loaded if guidance_scale == 8.5 else nodes.LCMGuidanceEmbedding().patch(loaded, guidance_scale)[0]
    config = comfy_host.lcm_config(nodes, model)
    sigmas, _ = nodes.LCMTimesteps().get_sigmas(config, steps, 1.0)
    sampler = nodes.LCMSampler().get_sampler(config)[0]
    output = comfy.nodes_custom_sampler.SamplerCustom.execute(
        model=model, add_noise=True, noise_seed=seed, cfg=1.0, positive=[[POSITIVE, {}]],
        negative=[[NEGATIVE, {}]], sampler=sampler, sigmas=sigmas,
        latent_image={"samples": torch.zeros(1, 4, latent_size, latent_size)})
    got = output.args[0]["samples"] * model.model.latent_format.scale_factor

    pipe = _lcm_pipeline(unet)
    size = latent_size * pipe.vae_scale_factor
    with torch.no_grad():
        reference = pipe(prompt_embeds=POSITIVE, num_inference_steps=steps, guidance_scale=guidance_scale,
                         height=size, width=size, generator=torch.Generator("cpu").manual_seed(seed),
                         output_type="latent").images
    assert got.shape == reference.shape and torch.isfinite(got).all()
    logging.getLogger(__name__).info("end-to-end max abs diff (seed %d, guidance %g): %.3g (max |latent| %.3g)",
                                     seed, guidance_scale, max_diff(got, reference), reference.abs().max().item())
    torch.testing.assert_close(got, reference, atol=LATENT_ATOL, rtol=0)


def test_file_without_cond_proj_warns_once_and_loads(comfy, nodes, lcm_unet, unet_folder, caplog):
    with caplog.at_level(logging.WARNING, logger=LOADER_LOGGER):
        model = nodes.LCMUNetLoader().load(PLAIN_FILE, "default", 8.5, DIFFUSERS)[0]
    warnings = [r for r in caplog.records if r.name == LOADER_LOGGER and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not a full LCM" in warnings[0].getMessage()
    assert lcm_unet.guidance_embedding_of(model) is None
    plain = comfy.sd.load_diffusion_model(str(unet_folder / PLAIN_FILE))
    out = comfy_unet(comfy, model, 499)
    assert torch.isfinite(out).all() and torch.equal(out, comfy_unet(comfy, plain, 499))
    with pytest.raises(ValueError, match="no restored LCM guidance embedding"):
        nodes.LCMGuidanceEmbedding().patch(model, 8.5, DIFFUSERS)


@pytest.mark.parametrize("content", [b"", b"not a model, just text\n", b"TRUNCATED"],
                         ids=("empty", "text", "truncated"))
def test_unreadable_file_error_names_the_file(comfy, nodes, unet_folder, lcm, content):
    """Found by trying: a broken file reached the user as SafetensorError with no file name."""
    import folder_paths

    name = "broken-unet.safetensors"
    if content == b"TRUNCATED":  # the first 1,000 bytes of a real file: a header that promises more
        content = (unet_folder / LCM_FILE).read_bytes()[:1000]
    (unet_folder / name).write_bytes(content)
    folder_paths.filename_list_cache.pop("diffusion_models", None)
    try:
        with pytest.raises(ValueError) as error:
            nodes.LCMUNetLoader().load(name, "default", 8.5, DIFFUSERS)
    finally:
        (unet_folder / name).unlink()
        folder_paths.filename_list_cache.pop("diffusion_models", None)
    message = str(error.value)
    assert message.startswith(f"LCMUNetLoader unet_name: '{name}' ({len(content):,} bytes) could not be read")
    assert "download it again" in message and "models/diffusion_models" in message
    assert "\n" not in message


def test_set_w_node_gives_independent_clones(comfy, nodes, lcm, loaded):
    unet, _ = lcm
    a = nodes.LCMGuidanceEmbedding().patch(loaded, 4.0, DIFFUSERS)[0]
    b = nodes.LCMGuidanceEmbedding().patch(a, 2.0, ORIGINAL)[0]
    expected = {id(loaded): 7.5, id(a): 3.0, id(b): 2.0}
    references = {w: diffusers_unet(unet, 499, w) for w in set(expected.values())}
    for model in (a, loaded, b, a, loaded, b):  # every swap direction
        assert max_diff(comfy_unet(comfy, model, 499), references[expected[id(model)]]) < UNET_ATOL
    assert loaded.object_patches[TIME_EMBED].w == 7.5
    # One cond_proj module shared by all clones: wherever the loaded model's weights are, it is too.
    assert b.object_patches[TIME_EMBED].cond_proj is loaded.object_patches[TIME_EMBED].cond_proj


def _time_embed_lora(rank=4, alpha=2.0):
    gen = torch.Generator().manual_seed(5)
    up = torch.randn(1280, rank, generator=gen) * 0.2
    down = torch.randn(rank, 320, generator=gen) * 0.2
    lora = {"lora_unet_time_embed_0.lora_up.weight": up, "lora_unet_time_embed_0.lora_down.weight": down,
            "lora_unet_time_embed_0.alpha": torch.tensor(alpha)}
    return lora, up @ down * (alpha / rank)


def _with_delta(unet, delta):
    patched = copy.deepcopy(unet)
    with torch.no_grad():
        patched.time_embedding.linear_1.weight += delta
    return patched


def test_lora_patch_on_time_embed_applies(comfy, nodes, lcm, loaded):
    """A LoRA on time_embed.0 (kohya name lora_unet_time_embed_0) still reaches the same Linear."""
    unet, _ = lcm
    lora, delta = _time_embed_lora()
    with_lora = comfy.sd.load_lora_for_models(loaded, None, lora, 1.0, 0)[0]
    assert "diffusion_model.time_embed.0.weight" in with_lora.patches
    reference = _with_delta(unet, delta)
    out = comfy_unet(comfy, with_lora, 499)
    assert max_diff(out, diffusers_unet(reference, 499, 7.5)) < UNET_ATOL
    assert max_diff(out, diffusers_unet(unet, 499, 7.5)) > 1e-3  # the LoRA changed something
    # The LoRA survives the set-w node, and the model without it is restored.
    retuned = nodes.LCMGuidanceEmbedding().patch(with_lora, 4.0, DIFFUSERS)[0]
    assert max_diff(comfy_unet(comfy, retuned, 499), diffusers_unet(reference, 499, 3.0)) < UNET_ATOL
    assert max_diff(comfy_unet(comfy, loaded, 499), diffusers_unet(unet, 499, 7.5)) < UNET_ATOL


@pytest.mark.parametrize("budget_mb", [0, 24])
def test_low_vram_partial_load(comfy, nodes, lcm, unet_folder, budget_mb):
    """ModelPatcher.partially_load with a small budget: offloaded modules (cond_proj among them) cast on the fly."""
    unet, _ = lcm
    lora, delta = _time_embed_lora()
    fresh = nodes.LCMUNetLoader().load(LCM_FILE, "default", 8.5, DIFFUSERS)[0]  # not shared with other tests
    model = comfy.sd.load_lora_for_models(fresh, None, lora, 1.0, 0)[0]
    try:
        model.partially_load(torch.device("cpu"), extra_memory=budget_mb * 1024 * 1024)
        assert model.model.model_lowvram
        time_embed = model.model.diffusion_model.time_embed
        assert time_embed is model.object_patches[TIME_EMBED]
        if budget_mb == 0:  # everything offloaded: the LoRA is a low-VRAM weight function, cond_proj is cast
            assert len(time_embed[0].weight_function) == 1
            assert hasattr(time_embed.cond_proj, "prev_comfy_cast_weights")
        with torch.no_grad():  # no load_models_gpu: it would load the model fully
            out = model.model.diffusion_model(X, timesteps=torch.full((2,), 499), context=CONTEXT)
        assert max_diff(out, diffusers_unet(_with_delta(unet, delta), 499, 7.5)) < UNET_ATOL
    finally:
        model.detach()


def _rounded(unet, dtype, keep=("time_embedding.cond_proj.weight",)):
    """diffusers' UNet with every weight rounded to `dtype` as ComfyUI stores it (computing in float32)."""
    rounded = copy.deepcopy(unet)
    with torch.no_grad():
        for name, p in rounded.named_parameters():
            if name not in keep:
                p.copy_(p.to(dtype).float())
    return rounded


@pytest.mark.parametrize("weight_dtype", [torch.float16, torch.bfloat16])
def test_half_precision_storage_and_compute(comfy, lcm, lcm_unet, weight_dtype):
    unet, sd = lcm
    model = lcm_unet.load_lcm_unet_state_dict(dict(sd), {"dtype": weight_dtype}, 7.5)
    cond_proj = model.object_patches[TIME_EMBED].cond_proj
    assert cond_proj.weight.dtype == weight_dtype  # stored like its sibling Linears
    # Stored in half, computed in ComfyUI's CPU compute dtype (float32): exact up to float32 rounding.
    reference = diffusers_unet(_rounded(unet, weight_dtype, keep=()), 499, 7.5)
    assert max_diff(comfy_unet(comfy, model, 499), reference) < UNET_ATOL
    # Computed in half (ModelComputeDtype's patch): cond_proj computes in half too.
    half = model.clone()
    half.set_model_compute_dtype(weight_dtype)
    seen = []
    hook = cond_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        out = comfy_unet(comfy, half, 499, X.to(weight_dtype), CONTEXT.to(weight_dtype))
    finally:
        hook.remove()
    assert seen == [weight_dtype] and out.dtype == weight_dtype and torch.isfinite(out).all()
    assert max_diff(out, reference) < 0.05 * reference.abs().max().item()


def test_fp8_storage(comfy, nodes, lcm, unet_folder):
    """weight_dtype fp8_e4m3fn as in UNETLoader; cond_proj is kept in the compute dtype, not fp8."""
    unet, _ = lcm
    model = nodes.LCMUNetLoader().load(LCM_FILE, "fp8_e4m3fn", 8.5, DIFFUSERS)[0]
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.float8_e4m3fn
    assert model.object_patches[TIME_EMBED].cond_proj.weight.dtype == model.model.manual_cast_dtype
    reference = diffusers_unet(_rounded(unet, torch.float8_e4m3fn), 499, 7.5)
    assert max_diff(comfy_unet(comfy, model, 499), reference) < UNET_ATOL


def test_model_save_round_trip(comfy, nodes, lcm_unet, loaded, tmp_path):
    """ModelSave (comfy_extras save_checkpoint) writes cond_proj under a key the loader finds again."""
    from comfy_extras.nodes_model_merging import save_checkpoint

    model = nodes.LCMGuidanceEmbedding().patch(loaded, 4.0, DIFFUSERS)[0]
    save_checkpoint(model, filename_prefix="lcm_round_trip", output_dir=str(tmp_path))
    (path,) = tmp_path.glob("lcm_round_trip*.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.time_embed.cond_proj.weight" in keys
    assert not any(k.endswith(".w") or "w_embedding" in k for k in keys)
    again = lcm_unet.load_lcm_unet(str(path), "default", 3.0)
    assert torch.equal(comfy_unet(comfy, again, 499), comfy_unet(comfy, model, 499))


@pytest.mark.parametrize("key", [
    "time_embedding.cond_proj.weight",  # diffusers layout name
    "model.diffusion_model.time_embed.cond_proj.weight",  # what ModelSave writes
    "time_embed.cond_proj.weight",
])
def test_cond_proj_key_variants(comfy, lcm, lcm_unet, loaded, key):
    _, sd = lcm
    variant = {k: v for k, v in sd.items() if "cond_proj" not in k}
    variant[key] = sd["model.diffusion_model.time_embedding.cond_proj.weight"]
    model = lcm_unet.load_lcm_unet_state_dict(variant, {}, 7.5)
    assert torch.equal(comfy_unet(comfy, model, 499), comfy_unet(comfy, loaded, 499))


def test_bad_cond_proj_errors(comfy, lcm, lcm_unet):
    _, sd = lcm
    weight = sd["model.diffusion_model.time_embedding.cond_proj.weight"]
    wrong_shape = {k: v for k, v in sd.items() if "cond_proj" not in k}
    wrong_shape["time_embedding.cond_proj.weight"] = weight.t().contiguous()
    with pytest.raises(ValueError, match=r"shape \(256, 320\).*320 channels"):
        lcm_unet.load_lcm_unet_state_dict(wrong_shape, {}, 7.5)
    ambiguous = {"model.diffusion_model.time_embedding.cond_proj.weight": weight, "time_embed.cond_proj.weight": weight}
    with pytest.raises(ValueError, match="several cond_proj"):
        lcm_unet.find_cond_proj(ambiguous)
    assert lcm_unet.find_cond_proj({"a.cond_proj.weight": weight, "x.time_embedding.cond_proj.weight": weight}) == \
        "x.time_embedding.cond_proj.weight"


@pytest.mark.skipif(not os.environ.get(FULL_SIZE_ENV),
                    reason=f"full-size UNet (45 s, 10 GB RAM) runs with {FULL_SIZE_ENV}=1, as `make test` sets it")
def test_full_size_sd15_diffusers_layout(comfy, lcm_unet, tmp_path):
    """The real SD1.5 architecture (860M) in diffusers layout, as LCM_Dreamshaper_v7 ships its UNet.

    ComfyUI only detects diffusers-layout UNets of a known full architecture. Stored in fp16
    (ComfyUI computes in float32 on the CPU), compared with diffusers on fp16-rounded weights.
    """
    unet = diffusers.UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                                          time_cond_proj_dim=256)
    comfy_host.seeded_init_(unet, 0)
    unet = unet.eval().requires_grad_(False)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in unet.state_dict().items()}, str(path))
    unet = _rounded(unet, torch.float16, keep=())
    model = lcm_unet.load_lcm_unet(str(path), "default", 7.5)
    assert type(model.model.model_config).__name__ == "SD15"
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(2))
    for w in (7.5, 3.0):
        patched = model if w == 7.5 else lcm_unet.set_guidance(model, w)
        for t in (999, 499, 19):
            got = comfy_unet(comfy, patched, t, x, context)
            assert max_diff(got, diffusers_unet(unet, t, w, x, context)) < UNET_ATOL
