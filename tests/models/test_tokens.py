"""Transformer plug-ins (issue 13): random-initialised tiny ViT / DeiT / SigLIP-MAP / EVA / Swin / OpenCLIP models.

``head(features(x))`` must be the model's own embedding (computed by timm's / open_clip's own forward, not ours),
features must be views of the token grid, layers are selectable, checkpoints load from local files (headless, other
input size, other classifier) and bad ones are refused with the key named.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from simx.errors import ModelSpecError, SimxError, WeightsError
from simx.models import load_model, toy
from simx.models.tokenmap import TokenMap, plain
from simx.models.tokens import TokenModel, layout_for


def _tiny_eva(layer=None):
    """EVA-02 with rotary position embeddings, 32 px, two blocks."""
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = timm.create_model("eva02_tiny_patch14_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                depth=2, num_heads=2, num_classes=0)
    return TokenModel("eva-test", net, layout_for(net), toy.Preprocessing(size=32, **toy.TOKEN_PRE), layer=layer,
                      device="cpu")


FAMILIES = {
    "vit_cls": toy.tiny_vit_token,
    "vit_mean": toy.tiny_vit_avg,
    "vit_registers": toy.tiny_vit_reg,
    "siglip_map": toy.tiny_vit_map,
    "deit_distilled": toy.tiny_vit_dist,
    "eva_rope": _tiny_eva,
    "swin": toy.tiny_swin,
    "openclip": toy.tiny_openclip,
}


def own_embedding(model, x: torch.Tensor) -> torch.Tensor:
    """The embedding as the library computes it, independent of simx's split."""
    net = model.net
    if model.supports_text:
        return model.text_encoder.clip.encode_image(x, normalize=False)
    return net.forward_head(net.forward_features(x), pre_logits=True)


@pytest.fixture(scope="module")
def models():
    return {name: make() for name, make in FAMILIES.items()}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_head_of_features_is_the_models_own_embedding(models, family):
    model = models[family]
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        feats = model.features(x)
        ours, theirs = model.head(feats), own_embedding(model, x)
    assert isinstance(feats, TokenMap) and feats.dim() == 4 and feats.shape[0] == 3
    assert feats.shape[-2:] == (4, 4)  # 32 px / 8 px patches (Swin: 32 / 4 / 2 after one merge)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert model.embed(x).shape == (3, model.dim)


def test_prefix_tokens_ride_along_and_default_layers(models):
    vit, reg, dist = models["vit_cls"], models["vit_registers"], models["deit_distilled"]
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert vit.features(x).prefix.shape == (2, 1, 32)
        assert reg.features(x).prefix.shape == (2, 3, 32)  # class + 2 registers: not grid cells
        assert dist.features(x).prefix.shape == (2, 2, 32)
    # class-token pooling: explained at the input of the last block (at the final norm no patch reaches the CLS)
    assert vit.layer == "blocks.1" and models["vit_mean"].layer == "norm" and models["swin"].layer == "norm"
    assert models["siglip_map"].layer == "norm" and models["openclip"].layer == "blocks.0"


def test_features_are_views_not_copies(models):
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        swin = models["swin"].features(x)
        vit = models["vit_cls"].features(x)
    assert swin.permute(0, 2, 3, 1).is_contiguous()  # Swin's NHWC stage output, permuted in place
    assert not vit.is_contiguous() and vit.prefix.data_ptr() < vit.data_ptr()  # the token tensor, transposed


def test_tokenmap_keeps_its_tokens_through_engine_operations(models):
    model = models["vit_registers"]
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        f = model.features(x)
        ref = model.head(f)
        parts = torch.cat([f[:1].float().contiguous().clone(), f[1:]])
        assert torch.equal(parts.prefix, f.prefix)
        torch.testing.assert_close(model.head(parts), ref)
        torch.testing.assert_close(model.head(f[2:3].expand(4, -1, -1, -1)), ref[2:3].expand(4, -1))
        torch.testing.assert_close(model.head(f * torch.ones(3, 1, 4, 4)), ref)
        with pytest.raises(SimxError, match="class/register tokens"):
            model.head(plain(f).clone())


@pytest.mark.parametrize("family,layer,canonical", [("vit_cls", "blocks.0", "blocks.0"), ("swin", "stages.0", "layers.0"),
                                                    ("eva_rope", "blocks.0", "blocks.0"),
                                                    ("openclip", "transformer.resblocks.1", "blocks.1")])
def test_any_layer_can_be_explained(models, family, layer, canonical):
    make = FAMILIES[family]
    model = make(layer=layer) if family != "openclip" else None
    if model is None:
        from simx.models.clip import build_openclip

        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_openclip("oc", toy.TINY_CLIP_CONFIG, None, layer=layer, device="cpu",
                                   preprocessing=toy.Preprocessing(size=32, **toy.TOKEN_PRE))
    assert model.layer == canonical
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.head(model.features(x)), own_embedding(model, x), atol=1e-5, rtol=0)
    with pytest.raises(ModelSpecError, match="choose one of"):
        make(layer="blocks.99") if family != "openclip" else build_openclip("oc", toy.TINY_CLIP_CONFIG, None,
                                                                            layer="blocks.99", device="cpu")


def test_python_factory_gets_the_layer():
    model = load_model("python:simx.models.toy:tiny_vit_token", layer="blocks.0", cache=False)
    assert model.layer == "blocks.0"


def test_linear_head_detected_only_for_mean_pooled_grids(models):
    assert models["vit_mean"].linear_head().pool == "avg" and models["swin"].linear_head().pool == "avg"
    for name in ("vit_cls", "siglip_map", "openclip", "vit_registers"):
        assert models[name].linear_head() is None


# -- timm:ARCH@WEIGHTS -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_tiny_net():
    import timm

    with torch.random.fork_rng():
        torch.manual_seed(3)
        return timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()


def test_headless_backbone_checkpoint_loads(vit_tiny_net, tmp_path):
    from safetensors.torch import save_file

    state = {k: v for k, v in vit_tiny_net.state_dict().items() if not k.startswith("head.")}
    path = tmp_path / "backbone.safetensors"
    save_file(state, str(path))
    model = load_model(f"timm:vit_tiny_patch16_224@{path}", device="cpu", cache=False)
    assert isinstance(model, TokenModel) and model.net.num_classes == 0 and model.layer == "blocks.10"
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        want = vit_tiny_net.forward_head(vit_tiny_net.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.embed(x), want, atol=1e-5, rtol=0)
    with pytest.raises(SimxError, match="no ImageNet classifier"):
        model.classify(Image.new("RGB", (40, 40)))


def test_checkpoint_at_another_resolution_and_bad_keys(vit_tiny_net, tmp_path):
    path = tmp_path / "full.pth"
    torch.save(vit_tiny_net.state_dict(), path)
    pre = {"size": 160, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "crop_pct": 1.0,
           "fit": "pad"}
    model = load_model(f"timm:vit_tiny_patch16_224@{path}", preprocessing=pre, device="cpu", cache=False)
    with torch.inference_mode():
        assert model.features(torch.zeros(1, 3, 160, 160)).shape[-2:] == (10, 10)  # position embedding resampled
    bad = dict(vit_tiny_net.state_dict())
    bad["blocks.0.attn.qkv.weight"] = bad["blocks.0.attn.qkv.weight"][:, :10]
    bad["stray.weight"] = torch.zeros(2)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as err:
        load_model(f"timm:vit_tiny_patch16_224@{tmp_path / 'bad.pth'}", device="cpu", cache=False)
    assert "stray.weight" in str(err.value) and "blocks.0.attn.qkv.weight" in str(err.value)


def test_hub_specs_fail_offline_with_the_local_file_recipe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"offline.*timm:ARCH@/path/to/model.safetensors"):
        load_model("timm:hf-hub:timm/vit_base_patch16_siglip_224.webli", cache=False)
    with pytest.raises(WeightsError, match=r"offline.*open_clip:/path/open_clip_config.json@"):
        load_model("open_clip:hf-hub:timm/ViT-B-16-SigLIP", cache=False)


# -- open_clip:ARCH@WEIGHTS -------------------------------------------------------------------------------------------
def test_open_clip_spec_from_a_config_file_and_weights(models, tmp_path):
    from safetensors.torch import save_file

    clip = models["openclip"].text_encoder.clip
    cfg, weights = tmp_path / "tiny-clip.json", tmp_path / "tiny-clip.safetensors"
    cfg.write_text(json.dumps({"model_cfg": toy.TINY_CLIP_CONFIG}))
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(weights))
    model = load_model(f"open_clip:{cfg}@{weights}", device="cpu", cache=False)
    assert model.supports_text and model.input_size == (32, 32)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model.embed(x), clip.encode_image(x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.embed_texts(["a red bus"]), models["openclip"].embed_texts(["a red bus"]),
                               atol=1e-6)
    with pytest.raises(SimxError, match="text query must not be empty"):
        model.embed_texts([" "])
    with pytest.raises(SimxError, match="no text tower"):
        models["vit_cls"].embed_texts(["a red bus"])
    save_file({"visual.conv1.weight": torch.zeros(1)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match="missing"):
        load_model(f"open_clip:{cfg}@{tmp_path / 'partial.safetensors'}", device="cpu", cache=False)
    with pytest.raises(ModelSpecError, match="no model"):
        load_model("open_clip:Not-A-Model", cache=False)
