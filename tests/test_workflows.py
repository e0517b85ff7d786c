"""The bundled workflows and the demo, against a real ComfyUI server.

example_workflows/<name>.json are the UI-format workflows that ComfyUI's
templates browser lists (GET /workflow_templates globs
custom_nodes/*/example_workflows/*.json, one level deep);
example_workflows/api/<name>.api.json are the same graphs in API format, which the
demo and these tests post (a subfolder, so the browser does not list them as broken
templates). lcm_txt2img_then_img2img: an LCM model or LCM-LoRA, txt2img then img2img
at strength 0.5; lcm_full_unet_txt2img: a full LCM UNet through LCMUNetLoader;
tcd_txt2img: TCD-LoRA through a LoraLoader, TCDSampler at gamma 0.3, with a Note naming the
files (notes exist only in the frontend: not in /object_info, not in API format);
flow_lcm_wan_t2v: Wan 2.1 T2V with a step-distill LoRA, the KSampler's lcm_diffusers on a flow
model and the same run through SamplerCustom + FlowMatchLCMTimesteps + LCMSampler;
flow_lightx2v_wan_preset: Wan 2.1 T2V 14B with lightx2v's LoRA, SamplerCustom with LCMPreset's sampler and
sigmas.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfy_host import (
    EXAMPLE_WORKFLOWS,
    FRONTEND_ONLY_TYPES,
    PACK_FOLDER,
    REPO_ROOT,
    ComfyServer,
    import_times,
    input_specs,
    load_script,
    ui_to_api,
    widget_slots,
)

NAME = "lcm_txt2img_then_img2img"
FULL_UNET_NAME = "lcm_full_unet_txt2img"
TCD_NAME = "tcd_txt2img"
KSAMPLER_NAME = "ksampler_lcm_lora"
FLOW_NAME = "flow_lcm_wan_t2v"
LIGHTX2V_NAME = "flow_lightx2v_wan_preset"
WORKFLOWS = (NAME, FULL_UNET_NAME, TCD_NAME, KSAMPLER_NAME, FLOW_NAME, LIGHTX2V_NAME)
UI_PATH = EXAMPLE_WORKFLOWS / f"{NAME}.json"
API_PATH = EXAMPLE_WORKFLOWS / "api" / f"{NAME}.api.json"
PACK_NODES = ("LCMSchedulerConfig", "LCMTimesteps", "LCMSampler")


def ui_path(name: str) -> Path:
    return EXAMPLE_WORKFLOWS / f"{name}.json"


def api_path(name: str) -> Path:
    return EXAMPLE_WORKFLOWS / "api" / f"{name}.api.json"


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def object_info(comfy_server: ComfyServer) -> dict[str, Any]:
    return comfy_server.object_info()


def declared_input_types(node_info: dict[str, Any]) -> dict[str, Any]:
    return {name: ("COMBO" if isinstance(kind, list) else kind) for name, kind, _, _ in input_specs(node_info)}


def test_server_lists_the_pack_nodes(object_info: dict[str, Any]) -> None:
    assert set(PACK_NODES) <= set(object_info)
    config, timesteps, sampler = (object_info[name] for name in PACK_NODES)
    assert config["output"] == ["LCM_CONFIG"]
    assert timesteps["output"] == ["SIGMAS", "STRING"]
    assert timesteps["input_order"]["required"] == ["config", "steps", "strength"]
    assert timesteps["input"]["required"]["config"][0] == "LCM_CONFIG"
    assert sampler["output"] == ["SAMPLER"]
    assert sampler["input_order"]["required"] == ["config"]
    assert sampler["input"]["required"]["config"][0] == "LCM_CONFIG"
    for name in PACK_NODES:
        assert object_info[name]["category"].startswith("sampling/custom_sampling/"), name
    # DESIGN.md: a description on every node of the pack, a tooltip on every input and output.
    ours = [name for name, info in object_info.items() if info["python_module"] == f"custom_nodes.{PACK_FOLDER}"]
    assert set(PACK_NODES) <= set(ours)
    for name in ours:
        info = object_info[name]
        assert info["description"], name
        assert all(info["output_tooltips"]), name
        for input_name, _, options, _ in input_specs(info):
            assert options.get("tooltip"), f"{name}.{input_name} has no tooltip"


def test_server_lists_tcd_sampler_and_the_scheduler_input(object_info: dict[str, Any]) -> None:
    sampler = object_info["TCDSampler"]
    assert sampler["output"] == ["SAMPLER"] and sampler["display_name"] == "TCD Sampler (gamma)"
    assert sampler["input_order"]["required"] == ["config", "gamma"]
    gamma = sampler["input"]["required"]["gamma"]
    assert gamma[0] == "FLOAT" and (gamma[1]["default"], gamma[1]["min"], gamma[1]["max"]) == (0.3, 0.0, 1.0)
    assert sampler["category"] == "sampling/custom_sampling/lcm"
    # Last among LCMTimesteps' widgets, so workflows saved before it existed load with its default.
    assert object_info["LCMTimesteps"]["input_order"]["optional"][-1] == "scheduler"
    assert object_info["LCMTimesteps"]["input"]["optional"]["scheduler"][0] == ["lcm", "tcd"]


def test_pack_import_time_is_small(comfy_server: ComfyServer) -> None:
    times = import_times(comfy_server.log_text())
    ours = {path: value for path, value in times.items() if Path(path).name == PACK_FOLDER}
    assert len(ours) == 1, f"no import time for the pack in the log: {times}"
    ((path, (seconds, imported)),) = ours.items()
    assert imported, f"ComfyUI failed to import {path}"
    assert seconds <= 0.1, f"the pack took {seconds} s to import (ComfyUI's start-up table)"


def test_templates_browser_lists_only_the_ui_workflows(comfy_server: ComfyServer) -> None:
    listed = comfy_server.get_json("/workflow_templates")
    assert set(listed) == {PACK_FOLDER} and sorted(listed[PACK_FOLDER]) == sorted(WORKFLOWS)
    for name in WORKFLOWS:
        served = comfy_server.get_json(f"/api/workflow_templates/{PACK_FOLDER}/{name}.json")
        assert served == load(ui_path(name))


@pytest.mark.parametrize("name", WORKFLOWS)
def test_ui_workflow_is_consistent(object_info: dict[str, Any], name: str) -> None:
    ui = load(ui_path(name))
    # The fields the frontend's workflow schema (zComfyWorkflow / zComfyNode, 1.32) requires.
    assert {"last_node_id", "last_link_id", "nodes", "links", "version"} <= set(ui) and ui["version"] == 0.4
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert ui["last_node_id"] == max(nodes) and ui["last_link_id"] == max(link[0] for link in ui["links"])
    # The Comfy Registry id (pyproject's [project] name, its first `name =` line) lets the
    # frontend / ComfyUI-Manager offer to install the pack when the nodes are missing.
    pack_id = re.search(r'^name = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    for node in nodes.values():
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "properties"} <= set(node)
        if node["type"] in FRONTEND_ONLY_TYPES:  # a note: its text is its one widget, it links to nothing
            assert node["type"] not in object_info
            assert [type(value) for value in node["widgets_values"]] == [str]
            assert not node.get("inputs") and not node.get("outputs")
            continue
        assert node["type"] in object_info, f"node {node['id']}: {node['type']} is not a ComfyUI node"
        info = object_info[node["type"]]
        slots = widget_slots(info)
        assert len(node["widgets_values"]) == len(slots), f"node {node['id']} ({node['type']}): widgets {slots}"
        for slot, value in zip(slots, node["widgets_values"]):
            if slot is None:
                assert value in ("fixed", "increment", "decrement", "randomize")
        if info["python_module"] == f"custom_nodes.{PACK_FOLDER}":
            assert node["properties"].get("cnr_id") == pack_id
    orders = sorted(node["order"] for node in nodes.values())
    assert orders == list(range(len(nodes)))
    for link_id, origin, origin_slot, target, target_slot, kind in ui["links"]:
        out = nodes[origin]["outputs"][origin_slot]
        inp = nodes[target]["inputs"][target_slot]
        declared_out = object_info[nodes[origin]["type"]]["output"][origin_slot]
        declared_in = declared_input_types(object_info[nodes[target]["type"]])[inp["name"]]
        assert kind == out["type"] == inp["type"] == declared_out == declared_in, f"link {link_id}"
        assert link_id in out["links"] and inp["link"] == link_id, f"link {link_id}"
        assert nodes[origin]["order"] < nodes[target]["order"], f"link {link_id} runs against the order"


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_api_workflow_is_consistent(object_info: dict[str, Any], workflow: str) -> None:
    api = load(api_path(workflow))
    for node_id, node in api.items():
        info = object_info[node["class_type"]]
        declared = declared_input_types(info)
        assert set(info["input"]["required"]) <= set(node["inputs"]), f"node {node_id} misses required inputs"
        for name, value in node["inputs"].items():
            assert name in declared, f"node {node_id}: unknown input {name}"
            if isinstance(value, list):
                source, slot = value
                assert source in api, f"node {node_id}.{name} links to missing node {source}"
                output = object_info[api[source]["class_type"]]["output"]
                assert 0 <= slot < len(output) and output[slot] == declared[name], f"node {node_id}.{name}"
    # Both files hold the same graph: the UI workflow converts to exactly the API one.
    assert ui_to_api(load(ui_path(workflow)), object_info) == api


def test_workflow_files_are_what_make_workflows_writes(comfy_server: ComfyServer, object_info: dict[str, Any]) -> None:
    """The files are generated from the nodes' declarations (scripts/make_workflows.py): when a node
    gains an input, `make workflows` rewrites them, and this test says so until it has run.

    They are made on the ComfyUI the workflows name (make_workflows.CORE_VERSION). A newer host may
    declare more outputs on core nodes (0.33's SaveImage passes its images on), which its front end
    adds on load; there the UI files are compared without the nodes' output lists."""
    make_workflows = load_script("make_workflows")
    files = make_workflows.render_all(object_info)
    assert {path.name for path in files} == {f"{name}.json" for name in WORKFLOWS} | {
        f"{name}.api.json" for name in WORKFLOWS}
    same_host = comfy_server.get_json("/system_stats")["system"]["comfyui_version"] == make_workflows.CORE_VERSION

    def comparable(path: Path, text: str) -> Any:
        data = json.loads(text)
        if not same_host and not path.name.endswith(".api.json"):
            for node in data["nodes"]:
                node.pop("outputs")
        return data

    stale = [str(path.relative_to(REPO_ROOT)) for path, text in files.items()
             if comparable(path, path.read_text(encoding="utf-8")) != comparable(path, text)]
    assert not stale, f"run `make workflows`: {stale} differ from what it writes"


def test_bundled_workflow_notes_name_every_file_it_loads() -> None:
    """Queued as it is, a workflow needs the files it names: its note says where each one goes."""
    for name in WORKFLOWS:
        ui = load(ui_path(name))
        notes = " ".join(node["widgets_values"][0] for node in ui["nodes"] if node["type"] == "Note")
        folders = {"ckpt_name": "models/checkpoints", "lora_name": "models/loras",
                   "unet_name": "models/diffusion_models", "clip_name": "models/text_encoders",
                   "vae_name": "models/vae"}
        for node in load(api_path(name)).values():
            for widget, folder in folders.items():
                if widget in node["inputs"]:
                    assert f"{folder}/{node['inputs'][widget]}" in notes, (name, widget)


def test_api_workflow_runs_to_two_images(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    """The bundled graph as it is, LoraLoader included (a tiny random LoRA for the tiny checkpoint
    under the LCM-LoRA's file name), on a 64x64 latent."""
    from PIL import Image

    files = comfy_server.output_files(comfy_server.run(bundled_graph(comfy_server, tiny_checkpoint), timeout=120))
    assert "lora key not loaded" not in comfy_server.log_text()
    assert sorted(f.name.split("_000")[0] for f in files) == ["lcm_img2img", "lcm_txt2img"]
    pixels = []
    for path in files:
        assert path.parent == comfy_server.output_dir and path.is_file()
        with Image.open(path) as img:
            assert img.size == (64, 64)
            lo, hi = img.convert("L").getextrema()
            assert hi > lo, f"{path.name} is a constant image"
            pixels.append(img.tobytes())
    assert pixels[0] != pixels[1]  # img2img changed the txt2img result


def bundled_graph(server: ComfyServer, checkpoint: str, size: int = 64, name: str = NAME) -> dict[str, Any]:
    """A bundled graph as it is (by default the txt2img -> img2img one) on the tiny checkpoint, with a
    tiny random LoRA for it saved under the file name that the graph's LoraLoader names."""
    graph = load(api_path(name))
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = checkpoint
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=size, height=size)
    (lora_name,) = {node["inputs"]["lora_name"] for node in graph.values() if node["class_type"] == "LoraLoader"}
    server.install_tiny_lora(lora_name)
    return graph


@pytest.mark.parametrize(("pasted", "message"), [
    ('{"beta_start": {"a": 1}}', "scheduler_config_json: beta_start must be a number (e.g. 0.00085"),
    ("[" * 100_000 + "]" * 100_000, "scheduler_config_json: scheduler config JSON is nested too deeply"),
], ids=("object-for-number", "deep-nesting"))
def test_bad_pasted_config_fails_its_prompt_and_the_next_prompt_runs(
        comfy_server: ComfyServer, tiny_checkpoint: str, pasted: str, message: str) -> None:
    from comfy_host import ComfyHostError

    graph = bundled_graph(comfy_server, tiny_checkpoint, size=32)
    (config,) = [node for node in graph.values() if node["class_type"] == "LCMSchedulerConfig"]
    config["inputs"]["scheduler_config_json"] = pasted
    with pytest.raises(ComfyHostError) as error:
        comfy_server.run(graph, timeout=120)
    assert f"(LCMSchedulerConfig): ValueError: LCMSchedulerConfig {message}" in str(error.value)
    config["inputs"]["scheduler_config_json"] = json.dumps({f"unknown_{i}": i for i in range(200_000)})
    assert len(comfy_server.output_files(comfy_server.run(graph, timeout=120))) == 2
    warning = [line for line in comfy_server.log_text().splitlines() if "TCDScheduler do not use" in line][-1]
    assert len(warning) < 400 and warning.endswith("and 199990 more")


def test_broken_unet_file_fails_its_prompt_and_names_the_file(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    from comfy_host import ComfyHostError

    folder = comfy_server.base_dir / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    graph = load(api_path(FULL_UNET_NAME))
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = tiny_checkpoint
        if node["class_type"] == "LCMUNetLoader":
            node["inputs"]["unet_name"] = "truncated.safetensors"
    with pytest.raises(ComfyHostError, match=r"LCMUNetLoader unet_name: 'truncated\.safetensors' \(9 bytes\) could "
                                             r"not be read as a model file"):
        comfy_server.run(graph, timeout=120)
    assert comfy_server.object_info()["LCMUNetLoader"]  # still serving


def test_full_lcm_unet_workflow_runs_to_an_image(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    """LCMUNetLoader with a tiny full-LCM UNet (guidance embedding included) in models/diffusion_models;
    CLIP and VAE from the tiny checkpoint."""
    from PIL import Image

    unet_name = "tiny-lcm-unet.safetensors"
    folder = comfy_server.base_dir / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    load_script("make_tiny_lcm_unet").make_tiny_lcm_unet(folder / unet_name, seed=0)
    graph = load(api_path(FULL_UNET_NAME))
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = tiny_checkpoint
        if node["class_type"] == "LCMUNetLoader":
            node["inputs"]["unet_name"] = unet_name
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
    (path,) = comfy_server.output_files(comfy_server.run(graph, timeout=120))
    assert path.name.startswith("lcm_full_unet")
    with Image.open(path) as img:
        lo, hi = img.convert("L").getextrema()
        assert img.size == (64, 64) and hi > lo
    assert "LCM guidance embedding restored" in comfy_server.log_text()


def test_ksampler_workflow_runs_to_an_image(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    from PIL import Image

    graph = bundled_graph(comfy_server, tiny_checkpoint, size=48, name=KSAMPLER_NAME)
    (ksampler,) = [node for node in graph.values() if node["class_type"] == "KSampler"]
    assert ksampler["inputs"]["sampler_name"] == ksampler["inputs"]["scheduler"] == "lcm_diffusers"
    (path,) = comfy_server.output_files(comfy_server.run(graph, timeout=120))
    with Image.open(path) as img:
        lo, hi = img.convert("L").getextrema()
        assert path.name.startswith("ksampler_lcm") and img.size == (48, 48) and hi > lo


def test_tcd_workflow_runs_with_a_lora_to_an_image(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    """The TCD graph as it is, on the tiny checkpoint and a tiny LoRA made for it (a stand-in for
    TCD-SD15-LoRA). The LoRA must reach the model: at strength 0 the image differs."""
    from PIL import Image

    lora_name = "tiny-lora.safetensors"
    load_script("make_tiny_checkpoint").make_tiny_lora(comfy_server.base_dir / "models" / "loras" / lora_name, seed=1)
    graph = load(api_path(TCD_NAME))
    (note_text,) = [node["widgets_values"][0] for node in load(ui_path(TCD_NAME))["nodes"] if node["type"] == "Note"]
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            assert f"models/checkpoints/{node['inputs']['ckpt_name']}" in note_text
            node["inputs"]["ckpt_name"] = tiny_checkpoint
        if node["class_type"] == "LoraLoader":
            assert f"models/loras/{node['inputs']['lora_name']}" in note_text
            node["inputs"]["lora_name"] = lora_name
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
    pixels = []
    for strength in (1.0, 0.0):
        for node in graph.values():
            if node["class_type"] == "LoraLoader":
                node["inputs"].update(strength_model=strength, strength_clip=strength)
        (path,) = comfy_server.output_files(comfy_server.run(graph, timeout=120))
        assert path.name.startswith("tcd_txt2img")
        with Image.open(path) as img:
            lo, hi = img.convert("L").getextrema()
            assert img.size == (64, 64) and hi > lo
            pixels.append(img.tobytes())
    assert pixels[0] != pixels[1]
    assert "lora key not loaded" not in comfy_server.log_text()


def tiny_wan_graph(server: ComfyServer, name: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """A bundled Wan 2.1 graph on a tiny random Wan 2.1 (transformer, VAE and LoRA under the file names the
    graph gives; tests/flow_models.py), 5 frames of 64x64; with its nodes' inputs by class. One change:
    umt5-xxl has no tiny form (CLIPLoader builds it at full size, 5.7B parameters, whatever the file holds),
    so Load CLIP reads a tiny CLIP-L as type sd3, whose conditioning ComfyUI pads to umt5's width, 4096."""
    import flow_models

    graph = load(api_path(name))
    inputs: dict[str, list[dict[str, Any]]] = {}
    for node in graph.values():
        inputs.setdefault(node["class_type"], []).append(node["inputs"])
    (unet,), (clip,), (vae,), (lora,) = (inputs[kind] for kind in (
        "UNETLoader", "CLIPLoader", "VAELoader", "LoraLoaderModelOnly"))
    assert clip["type"] == "wan"
    models = server.base_dir / "models"
    flow_models.write_tiny_wan_files(models, unet["unet_name"], vae["vae_name"], lora["lora_name"])
    load_script("make_tiny_checkpoint").make_tiny_clip_l(models / "text_encoders" / "tiny-clip-l.safetensors")
    clip.update(clip_name="tiny-clip-l.safetensors", type="sd3")
    for latent in inputs["EmptyHunyuanLatentVideo"]:
        latent.update(width=64, height=64, length=5)
    return graph, inputs


def saved_videos(server: ComfyServer, entry: dict[str, Any]) -> dict[str, list[bytes]]:
    """{file name prefix: the frames} of a run's animated WEBPs: 5 frames of 64x64, the first not constant."""
    from PIL import Image, ImageSequence

    out = {}
    for path in server.output_files(entry):
        with Image.open(path) as video:
            frames = [frame.convert("RGB") for frame in ImageSequence.Iterator(video)]
        assert [frame.size for frame in frames] == [(64, 64)] * 5, path.name
        lo, hi = frames[0].convert("L").getextrema()
        assert hi > lo, f"{path.name} starts with a constant frame"
        out[path.name.split("_000")[0]] = [frame.tobytes() for frame in frames]
    return out


def test_flow_wan_workflow_runs_both_rows_to_the_same_video(comfy_server: ComfyServer) -> None:
    """The Wan 2.1 graph on the tiny Wan 2.1 (tiny_wan_graph). The KSampler row and the SamplerCustom
    row give the same frames, and the LoRA reaches the model (strength 0 changes them)."""
    graph, inputs = tiny_wan_graph(comfy_server, FLOW_NAME)
    (ksampler,), (lora,) = inputs["KSampler"], inputs["LoraLoaderModelOnly"]
    assert (ksampler["sampler_name"], ksampler["scheduler"], ksampler["steps"], ksampler["cfg"]) == (
        "lcm_diffusers", "lcm_diffusers", 4, 1.0)
    with_lora = saved_videos(comfy_server, comfy_server.run(graph, timeout=180))
    assert sorted(with_lora) == ["flow_lcm_wan", "flow_lcm_wan_custom"]
    assert with_lora["flow_lcm_wan"] == with_lora["flow_lcm_wan_custom"]
    assert "lora key not loaded" not in comfy_server.log_text()
    lora["strength_model"] = 0.0
    assert saved_videos(comfy_server, comfy_server.run(graph, timeout=180))["flow_lcm_wan"] != with_lora["flow_lcm_wan"]


def test_lightx2v_preset_workflow_samples_the_authors_sigmas(comfy_server: ComfyServer, tiny_checkpoint: str) -> None:
    """The lightx2v graph on the tiny Wan 2.1 (tiny_wan_graph): SamplerCustom takes the preset's sampler and
    sigmas and the preset's cfg; Preview as Text nodes added to the graph read what the preset gave (LightX2V's
    timesteps 1000, 750, 500, 250 shifted by 5, as sigmas), and the video is not constant. The preset's model
    input is what makes a wrong family fail: on the tiny SD1.5 checkpoint the prompt is refused."""
    from comfy_host import ComfyHostError

    graph, inputs = tiny_wan_graph(comfy_server, LIGHTX2V_NAME)
    (preset_id,) = [nid for nid, node in graph.items() if node["class_type"] == "LCMPreset"]
    (sampler,) = inputs["SamplerCustom"]
    assert graph[preset_id]["inputs"]["preset"] == "lightx2v Wan2.1 StepDistill-CfgDistill 4-step (LCM)"
    assert (sampler["sampler"], sampler["sigmas"], sampler["cfg"]) == ([preset_id, 0], [preset_id, 1], 1.0)
    assert sampler["model"] == graph[preset_id]["inputs"]["model"]
    graph["90"] = {"class_type": "PreviewAny", "inputs": {"source": [preset_id, 1]}}
    graph["91"] = {"class_type": "PreviewAny", "inputs": {"source": [preset_id, 3]}}
    entry = comfy_server.run(graph, timeout=180)
    (sigmas_text,) = entry["outputs"]["90"]["text"]
    sigmas = [float(value) for value in re.findall(r"\d+\.\d+", sigmas_text.split("(", 1)[1])]
    assert sigmas == pytest.approx([1.0, 0.9375, 0.833333, 0.625, 0.0], abs=1e-4), sigmas_text
    assert entry["outputs"]["91"]["text"] == ["1.0"]  # the preset's cfg, the one SamplerCustom has
    assert list(saved_videos(comfy_server, entry)) == ["flow_lightx2v_wan"]
    assert "lora key not loaded" not in comfy_server.log_text()
    graph["92"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint}}
    graph[preset_id]["inputs"]["model"] = ["92", 0]
    with pytest.raises(ComfyHostError, match=r"LCMPreset preset='lightx2v Wan2\.1 StepDistill-CfgDistill 4-step "
                                             r"\(LCM\)': made for WAN21 .*but the model is BaseModel"):
        comfy_server.run(graph, timeout=120)


def test_demo_sets_or_removes_the_lora(object_info: dict[str, Any]) -> None:
    demo = load_script("demo")
    bundled = load(API_PATH)
    (ckpt,) = demo.nodes_of(bundled, "CheckpointLoaderSimple")
    (lora,) = demo.nodes_of(bundled, "LoraLoader")
    graph = demo.prepare_graph(bundled, "model.safetensors", 256, 7, lora_name="my-lcm-lora.safetensors")
    assert graph[lora]["inputs"]["lora_name"] == "my-lcm-lora.safetensors"
    assert [graph[n]["inputs"]["noise_seed"] for n in demo.nodes_of(graph, "SamplerCustom")] == [7, 8]
    users = {(nid, name) for nid, node in bundled.items() for name, value in node["inputs"].items()
             if isinstance(value, list) and value[0] == lora}
    assert users  # the LoRA feeds the samplers, the config and the prompts
    graph = demo.prepare_graph(bundled, "model.safetensors", 256, 7, lora_name=None)
    assert lora not in graph and set(graph) == set(bundled) - {lora}
    for nid, name in users:
        assert graph[nid]["inputs"][name] == [ckpt, bundled[nid]["inputs"][name][1]]
    for nid, node in graph.items():
        declared = declared_input_types(object_info[node["class_type"]])
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                assert object_info[graph[value[0]]["class_type"]]["output"][value[1]] == declared[name]


def run_demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "demo.py"), *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_demo_runs_the_digit_model_by_default(tmp_path: Path) -> None:
    """`make demo` with no model: digits at 1, 2, 4, 8 steps (the pack and ComfyUI's lcm), img2img and the flow
    student's row, one labelled picture, each row read back by the digit model's classifier, and what to run next."""
    from PIL import Image

    result = run_demo("--port", "0", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((tmp_path / "output").glob("digits_*.png"))) == 10 * 10
    with Image.open(tmp_path / "lcm_digits_demo.png") as picture:
        assert picture.width > 900 and picture.height > 10 * 64
    rows = {match.group(1).strip(): int(match.group(2)) for match in
            re.finditer(r"^  (.+?) classifier reads [0-9 ]+: (\d+)/10 right$", result.stdout, re.M)}
    assert len(rows) == 10, result.stdout
    assert rows["LCM Multistep (this pack), 4 steps"] >= 9 and rows["img2img at strength 0.5 from the 4-step row"] >= 9
    assert rows["Flow student (this pack), 4 training timesteps"] >= 9
    assert "999, 759, 499, 259" in result.stdout and "999, 759, 519 or 499, 259" in result.stdout
    assert "comfy-cli launch" in result.stdout and "make demo CKPT=" in result.stdout
    assert (tmp_path / "lcm_schedules_4steps.png").stat().st_size > 10_000


def test_demo_runs_a_checkpoint_with_a_lora(tmp_path: Path) -> None:
    """`make demo CKPT=... LORA=...`: the bundled txt2img -> img2img workflow on that model (the tiny
    checkpoint and a tiny LoRA here), the LoRA in the workflow's LoraLoader."""
    make = load_script("make_tiny_checkpoint")
    ckpt = make.make_tiny_checkpoint(tmp_path / "models" / "tiny.safetensors")
    lora = make.make_tiny_lora(tmp_path / "models" / "tiny-lora.safetensors")
    out = tmp_path / "base"
    result = run_demo("--ckpt", str(ckpt), "--lora", str(lora), "--size", "64", "--port", "0", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = sorted(p.name for p in (out / "output").glob("*.png"))
    assert outputs == ["lcm_img2img_00001_.png", "lcm_txt2img_00001_.png"]
    assert "on tiny.safetensors with tiny-lora.safetensors" in result.stdout
    assert not (out / "custom_nodes" / "lcm-digits-demo").exists()


def test_demo_refuses_bad_arguments_with_one_line(tmp_path: Path) -> None:
    result = run_demo("--ckpt", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == f"demo: --ckpt {tmp_path / 'missing.safetensors'}: no such file"
    (tmp_path / "lora.safetensors").write_bytes(b"")
    result = run_demo("--lora", str(tmp_path / "lora.safetensors"), "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2 and result.stderr.startswith("demo: --lora needs --ckpt")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_demo("--port", str(port), "--out", str(tmp_path), timeout=60)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "custom_nodes").exists()  # refused before touching anything
