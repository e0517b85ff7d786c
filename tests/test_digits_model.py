"""The digit demo's tiny LCM (demo/lcm_digits, demo/train_digits.py) in a real ComfyUI.

"Recognisable" is decided by the committed digit classifier (99 % on the held-out digits): for
each digit 0-9, a batch of BATCH samples asked for that digit must be classified as that digit by
a clear majority, and the mean classifier probability of the requested digit over all samples
must clear a bound. Pixels are never compared: the bounds hold with a margin for any torch build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import comfy_host
from comfy_host import DIGITS_DEMO_DIR, DIGITS_DEMO_FOLDER, REPO_ROOT

BATCH = 16
DIGITS = tuple(range(10))
# Fraction of a digit's batch that must be classified as the requested digit, and the bound on the
# mean probability of the requested digit over all 10 x BATCH samples, per way of sampling.
# Measured with the committed weights and these seeds: smallest per-digit fraction 0.75 at one LCM
# step and 1.0 otherwise; mean probability 0.919 (lcm_1), 0.997 (lcm_4), 1.000 (ksampler_teacher),
# 1.000 (ksampler_lcm). The classifier alone: 98.8 % on held-out digits (MODEL_CARD.md).
MAJORITY = 0.6
MIN_CONFIDENCE = {"lcm_1": 0.8, "lcm_4": 0.95, "ksampler_teacher": 0.95, "ksampler_lcm": 0.95,
                  "flow_training_timesteps": 0.9, "ksampler_flow_teacher": 0.9}
API_GRAPH = DIGITS_DEMO_DIR / "digits_txt2img.api.json"
DEMO_NODES = ("DigitsModelLoader", "DigitsConditioning", "DigitsDecode", "DigitsEncode")


@pytest.fixture(scope="module")
def demo(comfy: comfy_host.ComfyModules) -> Any:
    return comfy_host.import_digits_demo()


@pytest.fixture(scope="module")
def nodes(demo: Any) -> Any:
    return demo.demo_nodes


@pytest.fixture(scope="module")
def student(nodes: Any) -> Any:
    return nodes.DigitsModelLoader().load("student")[0]


@pytest.fixture(scope="module")
def teacher(nodes: Any) -> Any:
    return nodes.DigitsModelLoader().load("teacher")[0]


@pytest.fixture(scope="module")
def flow_student(nodes: Any) -> Any:
    return nodes.DigitsModelLoader().load("flow_student")[0]


def empty_latent(comfy: comfy_host.ComfyModules, batch: int = BATCH) -> dict[str, torch.Tensor]:
    return comfy.nodes.EmptyLatentImage().generate(32, 32, batch)[0]


def conditioning(nodes: Any, digit: Any) -> Any:
    return nodes.DigitsConditioning().encode(str(digit))[0]


def class_probabilities(demo: Any, nodes: Any, latent: dict[str, torch.Tensor]) -> torch.Tensor:
    """Decode a LATENT with the demo's node, then the committed classifier: (B, 10) probabilities."""
    image = nodes.DigitsDecode().decode(latent, 1)[0]  # (B, 8, 8, 3) in [0, 1]
    pixels = image[..., 0].unsqueeze(1) * 2.0 - 1.0
    with torch.no_grad():
        return demo.model.load_classifier()(pixels).softmax(-1)


def lcm_sample(comfy: comfy_host.ComfyModules, pack: Any, nodes: Any, model: Any, digit: int, steps: int,
               seed: int) -> dict[str, torch.Tensor]:
    """The pack's LCMSchedulerConfig / LCMTimesteps / LCMSampler through ComfyUI's SamplerCustom, cfg 1."""
    config = comfy_host.lcm_config(pack.nodes, model)
    sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, steps, 1.0)
    sampler = pack.nodes.LCMSampler().get_sampler(config)[0]
    return comfy.nodes_custom_sampler.SamplerCustom.execute(
        model=model, add_noise=True, noise_seed=seed, cfg=1.0, positive=conditioning(nodes, digit),
        negative=conditioning(nodes, "none"), sampler=sampler, sigmas=sigmas, latent_image=empty_latent(comfy)).args[0]


def ksample(comfy: comfy_host.ComfyModules, nodes: Any, model: Any, digit: int, seed: int, steps: int, cfg: float,
            sampler_name: str, scheduler: str) -> dict[str, torch.Tensor]:
    """ComfyUI's plain KSampler."""
    return comfy.nodes.KSampler().sample(model, seed, steps, cfg, sampler_name, scheduler, conditioning(nodes, digit),
                                         conditioning(nodes, "none"), empty_latent(comfy))[0]


def assert_recognisable(demo: Any, nodes: Any, draw: Any, label: str) -> None:
    """draw(digit, seed) -> LATENT; each digit's batch has the requested class by MAJORITY."""
    wanted_probability = []
    majorities = {}
    for digit in DIGITS:
        probs = class_probabilities(demo, nodes, draw(digit, 100 + digit))
        assert probs.shape == (BATCH, 10)
        majorities[digit] = float((probs.argmax(-1) == digit).float().mean())
        wanted_probability.append(probs[:, digit])
    confidence = float(torch.cat(wanted_probability).mean())
    weak = {d: m for d, m in majorities.items() if m < MAJORITY}
    assert not weak, f"{label}: digits not drawn by a {MAJORITY:.0%} majority (fraction right): {weak}"
    assert confidence >= MIN_CONFIDENCE[label], f"{label}: mean probability of the requested digit {confidence:.3f}"


# ------------------------------------------------------------------------------------ the model in ComfyUI


def test_model_runs_on_comfyui_classes_with_latent_scale_one(comfy: comfy_host.ComfyModules, demo: Any,
                                                             student: Any) -> None:
    base = student.model
    assert isinstance(base, comfy.model_base.BaseModel) and isinstance(student, comfy.model_patcher.ModelPatcher)
    assert isinstance(base.model_config, comfy.supported_models.SD15)
    assert base.model_type == comfy.model_base.ModelType.EPS
    assert type(base.diffusion_model).__name__ == "UNetModel"
    assert 0.5e6 < sum(p.numel() for p in base.diffusion_model.parameters()) < 2e6
    # LATENT == the packed data latent: process_latent_in / out are the identity.
    x = torch.randn(2, 4, 4, 4)
    assert base.latent_format.scale_factor == 1.0
    assert torch.equal(base.process_latent_in(x), x) and torch.equal(base.process_latent_out(x), x)
    assert empty_latent(comfy, 2)["samples"].shape == (2, 4, 4, 4)


def test_flow_models_are_comfyui_flow_models_with_the_training_shift(comfy: comfy_host.ComfyModules, demo: Any,
                                                                    nodes: Any, flow_student: Any) -> None:
    """CONST over ModelSamplingDiscreteFlow (what ModelSamplingSD3 installs), shift 5, time = sigma * 1000."""
    teacher = nodes.DigitsModelLoader().load("flow_teacher")[0]
    for patcher in (flow_student, teacher):
        base = patcher.model
        assert base.model_type == comfy.model_base.ModelType.FLOW
        sampling = base.model_sampling
        assert isinstance(sampling, comfy.model_sampling.ModelSamplingDiscreteFlow)
        assert isinstance(sampling, comfy.model_sampling.CONST)
        assert sampling.shift == demo.model.FLOW_SHIFT == 5.0 and sampling.multiplier == 1000
        assert base.latent_format.scale_factor == 1.0
    first, other = flow_student.model.diffusion_model.state_dict(), teacher.model.diffusion_model.state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first), "flow student and teacher are the same weights"
    # The training grid: LightX2V's [1000, 750, 500, 250] / 1000 at shift 5 (Wan2.2-Lightning's quoted timesteps).
    np.testing.assert_allclose(demo.model.flow_training_sigmas(), [1.0, 0.9375, 0.833333, 0.625], rtol=1e-5)
    # ComfyUI's `simple` at 4 steps on the model picks the same four sigmas.
    simple = comfy.samplers.calculate_sigmas(flow_student.get_model_object("model_sampling"), "simple", 4)
    np.testing.assert_allclose(simple[:-1].tolist(), demo.model.flow_training_sigmas(), rtol=1e-5)


def test_loader_gives_the_same_weights_every_time(nodes: Any, student: Any, teacher: Any) -> None:
    again = nodes.DigitsModelLoader().load("student")[0]
    first, second = student.model.diffusion_model.state_dict(), again.model.diffusion_model.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    other = teacher.model.diffusion_model.state_dict()
    assert any(not torch.equal(first[k], other[k]) for k in first), "student and teacher are the same weights"


def test_conditioning_rows(demo: Any, nodes: Any) -> None:
    table = demo.model.class_embedding()
    assert table.shape == (11, demo.model.CONTEXT_DIM)
    for digit in (*DIGITS, "none"):
        ((context, extra),) = conditioning(nodes, digit)
        row = 10 if digit == "none" else digit
        assert context.shape == (1, 1, demo.model.CONTEXT_DIM) and extra == {}
        assert torch.equal(context[0, 0], table[row])
    with pytest.raises(ValueError, match="digit"):
        nodes.DigitsConditioning().encode("11")
    ((batch, _),) = conditioning(nodes, "0-9")
    assert batch.shape == (10, 1, demo.model.CONTEXT_DIM) and torch.equal(batch[:, 0], table[:10])


def test_batch_of_ten_digits_draws_each_digit(comfy: comfy_host.ComfyModules, pack: Any, demo: Any, nodes: Any,
                                              student: Any) -> None:
    """'0-9' with a latent batch of ten: latent i is digit i (what the demo's grid uses)."""
    config = comfy_host.lcm_config(pack.nodes, student)
    sigmas, _ = pack.nodes.LCMTimesteps().get_sigmas(config, 4, 1.0)
    latent = comfy.nodes_custom_sampler.SamplerCustom.execute(
        model=student, add_noise=True, noise_seed=3, cfg=1.0, positive=conditioning(nodes, "0-9"),
        negative=conditioning(nodes, "none"), sampler=pack.nodes.LCMSampler().get_sampler(config)[0],
        sigmas=sigmas, latent_image=empty_latent(comfy, 10)).args[0]
    assert class_probabilities(demo, nodes, latent).argmax(-1).tolist() == list(DIGITS)


def test_decode_and_encode_are_inverse(nodes: Any) -> None:
    latent = {"samples": torch.rand(3, 4, 4, 4) * 2.4 - 1.2}
    image = nodes.DigitsDecode().decode(latent, 8)[0]
    assert image.shape == (3, 64, 64, 3) and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    again = nodes.DigitsEncode().encode(image)[0]["samples"]
    torch.testing.assert_close(again, latent["samples"].clamp(-1, 1), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="4 channels|\\(B, 4, H, W\\)"):
        nodes.DigitsDecode().decode({"samples": torch.zeros(1, 16, 4, 4)}, 8)


def test_committed_weights_are_small_and_the_classifier_is_accurate(demo: Any) -> None:
    models = demo.model.MODELS_DIR
    files = sorted(models.glob("*.safetensors"))
    assert {f.name for f in files} == {*demo.model.UNET_FILES.values(), demo.model.EMBEDDING_FILE,
                                       demo.model.CLASSIFIER_FILE}
    assert sum(f.stat().st_size for f in files) <= 15 * 10**6
    assert (models / "MODEL_CARD.md").is_file()
    _, _, held_x, held_y = demo.model.digit_split()
    assert len(held_y) == demo.model.HELD_OUT == 500
    with torch.no_grad():
        accuracy = float((demo.model.load_classifier()(held_x).argmax(-1) == held_y).float().mean())
    assert accuracy >= 0.97, f"classifier held-out accuracy {accuracy:.3f}"


# ------------------------------------------------------------------------------------ recognisable digits


@pytest.mark.parametrize("steps", [1, 4])
def test_student_draws_recognisable_digits_with_the_pack_lcm_sampler(comfy: comfy_host.ComfyModules, pack: Any,
                                                                     demo: Any, nodes: Any, student: Any,
                                                                     steps: int) -> None:
    assert_recognisable(demo, nodes, lambda digit, seed: lcm_sample(comfy, pack, nodes, student, digit, steps, seed),
                        f"lcm_{steps}")


def test_plain_ksampler_runs_the_teacher_and_the_student(comfy: comfy_host.ComfyModules, demo: Any, nodes: Any,
                                                        student: Any, teacher: Any) -> None:
    """The ordinary graph, unchanged: KSampler with the teacher (euler, 20 steps, CFG 4: its distillation
    scale) and with the student (ComfyUI's own lcm sampler, 4 steps, cfg 1)."""
    assert_recognisable(demo, nodes, lambda digit, seed: ksample(comfy, nodes, teacher, digit, seed, 20, 4.0, "euler",
                                                                 "normal"), "ksampler_teacher")
    assert_recognisable(demo, nodes, lambda digit, seed: ksample(comfy, nodes, student, digit, seed, 4, 1.0, "lcm",
                                                                 "sgm_uniform"), "ksampler_lcm")


def test_flow_student_draws_recognisable_digits_on_its_training_timesteps(comfy: comfy_host.ComfyModules, pack: Any,
                                                                         demo: Any, nodes: Any,
                                                                         flow_student: Any) -> None:
    """The pack's LCMSampler on the flow student, sigmas = FlowMatchLCMTimesteps' custom training grid, cfg 1."""
    sigmas, _ = pack.nodes.FlowMatchLCMTimesteps().get_sigmas(
        flow_student, 4, 1.0, sigmas=", ".join(map(str, demo.model.FLOW_TRAINING_GRID)))
    np.testing.assert_allclose(sigmas[:-1].tolist(), demo.model.flow_training_sigmas(), rtol=1e-5)
    sampler = pack.nodes.LCMSampler().get_sampler(comfy_host.lcm_config(pack.nodes))[0]  # config unused on flow

    def draw(digit: int, seed: int) -> dict[str, torch.Tensor]:
        return comfy.nodes_custom_sampler.SamplerCustom.execute(
            model=flow_student, add_noise=True, noise_seed=seed, cfg=1.0, positive=conditioning(nodes, digit),
            negative=conditioning(nodes, "none"), sampler=sampler, sigmas=sigmas,
            latent_image=empty_latent(comfy)).args[0]
    assert_recognisable(demo, nodes, draw, "flow_training_timesteps")


def test_plain_ksampler_runs_the_flow_teacher(comfy: comfy_host.ComfyModules, demo: Any, nodes: Any) -> None:
    teacher = nodes.DigitsModelLoader().load("flow_teacher")[0]
    assert_recognisable(demo, nodes, lambda digit, seed: ksample(
        comfy, nodes, teacher, digit, seed, 20, demo.model.FLOW_GUIDANCE, "euler", "simple"), "ksampler_flow_teacher")


# ------------------------------------------------------------------------------------ training script


def test_training_script_quick_run_writes_loadable_weights(demo: Any, tmp_path: Path) -> None:
    out = tmp_path / "models"
    env = dict(os.environ, LCM_COMFYUI=str(comfy_host.comfy_tree()))
    result = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "train_digits.py"), "--quick", "--out", str(out)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "train_report.json").read_text(encoding="utf-8"))
    for phase in ("teacher", "classifier", "student"):
        assert report[phase]["steps"] >= 1 and np.isfinite(report[phase]["final_loss"]), report[phase]
    assert 0.0 <= report["evaluation"]["classifier_held_out_accuracy"] <= 1.0
    from safetensors.torch import load_file

    def weights(name: str) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in load_file(str(out / name)).items()}

    m = demo.model
    for name in (m.TEACHER_FILE, m.STUDENT_FILE):
        unet = m.load_unet_model(weights=weights(name)).diffusion_model
        with torch.no_grad():
            eps = unet(torch.randn(2, 4, 4, 4), torch.tensor([999.0, 10.0]),
                       context=m.context_for(torch.tensor([3, 10]), m.class_embedding(weights(m.EMBEDDING_FILE))))
        assert eps.shape == (2, 4, 4, 4) and bool(torch.isfinite(eps).all())
    m.load_classifier(weights(m.CLASSIFIER_FILE))


def test_flow_training_script_quick_run_writes_loadable_flow_weights(demo: Any, tmp_path: Path) -> None:
    out = tmp_path / "models"
    env = dict(os.environ, LCM_COMFYUI=str(comfy_host.comfy_tree()))
    result = subprocess.run([sys.executable, str(REPO_ROOT / "demo" / "train_flow_digits.py"), "--quick", "--out",
                             str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "train_flow_report.json").read_text(encoding="utf-8"))
    for phase in ("teacher", "trajectories", "student"):
        assert report[phase]["steps"] >= 1 and np.isfinite(report[phase]["final_loss"]), report[phase]
    assert report["trajectories"]["trajectories"] >= 1
    np.testing.assert_allclose(report["training_sigmas"], demo.model.flow_training_sigmas())
    from safetensors.torch import load_file

    m = demo.model
    for kind in m.FLOW_KINDS:
        weights = {k: v.float() for k, v in load_file(str(out / m.UNET_FILES[kind])).items()}
        base = m.load_unet_model(kind, weights=weights)
        assert base.model_type.name == "FLOW"
        with torch.no_grad():
            v = base.diffusion_model(torch.randn(2, 4, 4, 4), torch.tensor([1000.0, 625.0]),
                                     context=m.context_for(torch.tensor([3, 10]), m.class_embedding()))
        assert v.shape == (2, 4, 4, 4) and bool(torch.isfinite(v).all())


# ------------------------------------------------------------------------------------ not part of the pack


def test_demo_nodes_never_register_with_the_pack(pack: Any, demo: Any) -> None:
    assert set(demo.NODE_CLASS_MAPPINGS) == set(DEMO_NODES)
    assert not set(pack.NODE_CLASS_MAPPINGS) & set(demo.NODE_CLASS_MAPPINGS)
    assert all(not cls.__module__.startswith(comfy_host.DIGITS_DEMO_MODULE)
               for cls in pack.NODE_CLASS_MAPPINGS.values())


@pytest.mark.filterwarnings("ignore:GitWildMatchPattern:DeprecationWarning")  # comfy-cli's own pattern kind
def test_comfyignore_keeps_the_demo_out_of_the_registry_archive() -> None:
    """comfy-cli's pack drops what .comfyignore matches (gitwildmatch), unless [tool.comfy].includes names it."""
    import pathspec

    lines = (REPO_ROOT / ".comfyignore").read_text(encoding="utf-8").splitlines()
    spec = pathspec.PathSpec.from_lines("gitwildmatch", [ln.strip() for ln in lines
                                                         if ln.strip() and not ln.lstrip().startswith("#")])
    demo_files = [p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "demo").rglob("*") if p.is_file()]
    assert demo_files and all(spec.match_file(f) for f in demo_files), [f for f in demo_files if not spec.match_file(f)]
    assert not spec.match_file("nodes/sampler.py")  # the check itself can tell kept files
    pyproject = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    includes = [ln for ln in pyproject.splitlines() if ln.strip().startswith("includes")]
    assert includes and all("demo" not in ln for ln in includes), includes


# ------------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def demo_server() -> Any:
    """A ComfyUI server with the pack and, beside it, the demo folder linked as custom_nodes/lcm-digits-demo."""
    try:
        comfy_host.comfy_tree()
    except comfy_host.ComfyHostError as err:
        pytest.fail(str(err), pytrace=False)
    with comfy_host.ComfyServer(extra_custom_nodes={DIGITS_DEMO_FOLDER: DIGITS_DEMO_DIR}) as server:
        yield server


def test_server_loads_the_demo_as_its_own_custom_node_folder(demo_server: comfy_host.ComfyServer) -> None:
    times = comfy_host.import_times(demo_server.log_text())
    by_name = {Path(path).name: imported for path, (_, imported) in times.items()}
    assert by_name.get(DIGITS_DEMO_FOLDER) is True and by_name.get(comfy_host.PACK_FOLDER) is True, times
    info = demo_server.object_info()
    for name in DEMO_NODES:
        node = info[name]
        assert node["python_module"] == f"custom_nodes.{DIGITS_DEMO_FOLDER}"
        assert node["category"] == "lcm_digits_demo" and node["description"] and all(node["output_tooltips"])
        for input_name, _, options, _ in comfy_host.input_specs(node):
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"
    pack_nodes = [n for n, i in info.items() if i["python_module"] == f"custom_nodes.{comfy_host.PACK_FOLDER}"]
    assert pack_nodes and not set(pack_nodes) & set(DEMO_NODES)


def test_api_graph_draws_sevens_in_a_real_server(demo_server: comfy_host.ComfyServer, demo: Any, nodes: Any) -> None:
    from PIL import Image

    graph = json.loads(API_GRAPH.read_text(encoding="utf-8"))
    assert graph["2"]["inputs"]["digit"] == "7" and graph["6"]["inputs"]["steps"] == 4
    entry = demo_server.run(graph, timeout=120)
    files = demo_server.output_files(entry)
    assert len(files) == graph["4"]["inputs"]["batch_size"]
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
                          for f in files])
    assert images.shape[1:] == (64, 64, 3)
    latent = nodes.DigitsEncode().encode(images)[0]
    probs = class_probabilities(demo, nodes, latent)
    assert int((probs.argmax(-1) == 7).sum()) >= len(files) - 1, probs.argmax(-1).tolist()
