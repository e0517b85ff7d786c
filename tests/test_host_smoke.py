"""The test host itself: a real ComfyUI in-process and as a server, and the tiny models.

If these fail, every host-level test of the pack is meaningless, so they check
the plumbing first: ComfyUI's `nodes` is the one imported, the diffusers and
ComfyUI copies of the tiny UNet / VAE compute the same thing, and a stock
txt2img graph runs on the tiny checkpoint in a live server.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from comfy_host import REPO_ROOT, ComfyModules, ComfyServer, load_script, tiny_unet_pair, tiny_vae_pair, txt2img_graph

TIMESTEPS = (999, 759, 499, 259, 19, 0)


def test_import_nodes_is_comfyui(comfy: ComfyModules) -> None:
    import nodes

    assert Path(nodes.__file__).resolve() == comfy.tree / "nodes.py"
    assert "KSampler" in nodes.NODE_CLASS_MAPPINGS
    # ComfyUI's nodes.py itself then puts <tree>/comfy at sys.path[0]; what matters
    # is that the tree stays ahead of the repo root (cwd under `python -m pytest`).
    entries = [str(Path(p or ".").resolve()) for p in sys.path]
    if str(REPO_ROOT) in entries:
        assert entries.index(str(comfy.tree)) < entries.index(str(REPO_ROOT))
    assert (REPO_ROOT / "nodes").is_dir()  # the pack's subpackage exists and is shadowed on purpose


@pytest.mark.parametrize(("prediction", "zsnr"), [("epsilon", False), ("v_prediction", True)])
def test_unet_pair_agrees(comfy: ComfyModules, prediction: str, zsnr: bool) -> None:
    unet, patcher = tiny_unet_pair(seed=0, prediction=prediction, zsnr=zsnr)
    model = patcher.model
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 16, 16, generator=gen)  # diffusers' x_t (the UNet input)
    context = torch.randn(2, 5, 32, generator=gen)
    with torch.no_grad():
        for step in TIMESTEPS:
            t = torch.full((2,), step)
            expected = unet(x, t, encoder_hidden_states=context).sample
            assert expected.isfinite().all() and expected.std() > 0.1  # weights of a sensible scale
            raw = model.diffusion_model(x, t.float(), context=context)
            torch.testing.assert_close(raw, expected, atol=1e-5, rtol=0, msg=f"raw UNet output, t={step}")

            # Through ComfyUI's k-space wrapper: x_k = x_t * sqrt(1 + sigma^2) in,
            # x0 out; recover the UNet output from x0 and compare again.
            sigma = model.model_sampling.sigma(t.float())
            assert torch.equal(model.model_sampling.timestep(sigma).float(), t.float())
            s = sigma.view(-1, 1, 1, 1)
            x_k = x * (s**2 + 1).sqrt()
            x0 = model.apply_model(x_k, sigma, c_crossattn=context)
            if prediction == "epsilon":
                recovered = (x_k - x0) / s
            else:  # x0 = x_k / (s^2 + 1) - v s / sqrt(s^2 + 1)
                recovered = (x_k / (s**2 + 1) - x0) * (s**2 + 1).sqrt() / s
            torch.testing.assert_close(recovered, expected, atol=1e-5, rtol=0, msg=f"via apply_model, t={step}")


def test_vae_pair_agrees(comfy: ComfyModules) -> None:
    vae, comfy_vae = tiny_vae_pair(seed=0)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 8, 8, generator=gen)
    with torch.no_grad():
        # decode: diffusers BCHW in [-1, 1]; ComfyUI BHWC clamped to [0, 1].
        expected = ((vae.decode(z).sample + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)
        got = comfy_vae.decode(z)
        assert got.shape == (2, 64, 64, 3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        # encode: ComfyUI returns the posterior mode (= mean), not a sample.
        image = torch.rand(2, 64, 64, 3, generator=gen)
        mean = vae.encode(image.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean
        torch.testing.assert_close(comfy_vae.encode(image), mean, atol=1e-5, rtol=0)


def test_tiny_checkpoint_init_is_deterministic() -> None:
    make = load_script("make_tiny_checkpoint")
    shapes = make.checkpoint_shapes()
    for name in ("model.diffusion_model.out.2.weight", "cond_stage_model.transformer.text_model.final_layer_norm.bias"):
        shape, _ = shapes[name]
        assert torch.equal(make._init(name, shape, 7), make._init(name, shape, 7))
        assert not torch.equal(make._init(name, shape, 7), make._init(name, shape, 8))


def test_server_lists_builtin_nodes(comfy_server: ComfyServer) -> None:
    info = comfy_server.object_info()
    assert {"CheckpointLoaderSimple", "SamplerCustom", "KSampler"} <= set(info)
    # The repo is symlinked into custom_nodes/ and ComfyUI tries to import it.
    assert (comfy_server.base_dir / "custom_nodes" / "lcm-multistep").resolve() == REPO_ROOT
    error = comfy_server.pack_import_error()
    if (REPO_ROOT / "__init__.py").is_file():
        assert error is None, f"ComfyUI could not import the pack: {error}\n{comfy_server.log_text()}"
    else:  # the entry point is not written yet: ComfyUI says so and carries on
        assert error is not None and "__init__.py" in error


def test_tiny_checkpoint_loads_as_sd15(comfy: ComfyModules, comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    """Exactly the keys and shapes that ComfyUI builds for it: nothing left uninitialised."""
    from safetensors import safe_open

    path = comfy_server.checkpoints_dir / tiny_checkpoint
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path))
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert type(vae.first_stage_model).__name__ == "TAESD"
    # ComfyUI 0.33 saves through ModelPatcher.state_dict_for_saving and gave BaseModel's a leading
    # unet_state_dict parameter; keywords work with both generations.
    owner = model if hasattr(model, "state_dict_for_saving") else model.model
    saved = owner.state_dict_for_saving(clip_state_dict=clip.get_sd(), vae_state_dict=vae.get_sd())
    with safe_open(str(path), "pt") as f:
        in_file = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert set(in_file) == set(saved)
    assert all(in_file[k] == tuple(saved[k].shape) for k in in_file)


def test_txt2img_runs_on_tiny_checkpoint(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    from PIL import Image

    graph = txt2img_graph(tiny_checkpoint, steps=2, sampler_name="lcm", scheduler="sgm_uniform", width=512, height=512)
    entry = comfy_server.run(graph, timeout=120)
    files = comfy_server.output_files(entry)
    assert len(files) == 1 and files[0].suffix == ".png" and files[0].is_file()
    assert files[0].parent == comfy_server.output_dir
    with Image.open(files[0]) as img:
        assert img.size == (512, 512)
        lo, hi = img.convert("L").getextrema()
        assert hi > lo  # not a constant image


def test_server_errors_carry_comfyui_details(comfy_server: ComfyServer) -> None:
    from comfy_host import ComfyHostError

    # Rejected at validation (POST /prompt answers 400 with node_errors).
    with pytest.raises(ComfyHostError, match="ckpt_name"):
        comfy_server.post_prompt(txt2img_graph("no-such-file.safetensors"))
    # Fails while executing: the history entry's execution_error names the node.
    (comfy_server.checkpoints_dir / "broken.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ComfyHostError, match=r"node 1 \(CheckpointLoaderSimple\)"):
        comfy_server.run(txt2img_graph("broken.safetensors"), timeout=60)
