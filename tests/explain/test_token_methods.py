"""Every explanation method on transformer plug-ins (issue 13): maps of the input size on both sides, or a refusal
that says why; gradcam against pytorch-grad-cam with a token reshape_transform; jointcam's sum on a mean-pooled ViT;
attngrad (gradient-weighted attention rollout); text queries explained on the image side."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from simx.errors import ExplainError
from simx.explain import REGISTRY, PairContext, explain
from simx.explain.metrics import faithfulness
from simx.explain.text import explain_text
from simx.models import toy

FAMILIES = {
    "vit_cls": toy.tiny_vit_token,
    "vit_mean": toy.tiny_vit_avg,
    "vit_registers": toy.tiny_vit_reg,
    "eva_rope": toy.tiny_eva,
    "swin": toy.tiny_swin,
    "openclip": toy.tiny_openclip,
}
#: the only refusals allowed, per family (closed forms need a mean-pooled linear head; SANE needs a trained
#: attribute predictor on any model without an ImageNet classifier; attngrad needs global attention)
MAY_REFUSE = {
    "vit_cls": {"jointcam", "searchcam", "sfam", "sane"},
    "vit_mean": {"sane"},
    "vit_registers": {"jointcam", "searchcam", "sfam", "sane"},
    "eva_rope": {"jointcam", "searchcam", "sfam", "sane"},  # mean-pooled, but fc_norm: not a linear head
    "swin": {"sane", "attngrad"},
    "openclip": {"jointcam", "searchcam", "sfam", "sane"},
}
SMALL = {"n_samples": 48, "batch_size": 64}


def _small_params(method: str) -> dict:
    accepted = inspect.signature(REGISTRY[method].fn).parameters
    return {k: v for k, v in SMALL.items() if k in accepted}


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(5)
    return list(torch.rand(3, 3, 32, 32, generator=g) * 2 - 1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_maps_both_sides_or_says_why(family, images):
    model = FAMILIES[family]()
    refused = {}
    for method in sorted(REGISTRY):
        try:
            exp = explain(model, images[0], images[1:], method=method, **_small_params(method))
        except ExplainError as exc:
            refused[method] = str(exc)
            continue
        assert exp.query_maps.shape == (2, 32, 32) and exp.neighbour_maps.shape == (2, 32, 32), method
        assert np.isfinite(exp.query_maps).all() and np.isfinite(exp.neighbour_maps).all(), method
    assert set(refused) <= MAY_REFUSE[family], refused
    for method, reason in refused.items():
        assert len(reason) > 40 and model.spec in reason or "attribute predictor" in reason, (method, reason)
    scores = faithfulness(explain(model, images[0], images[1:], method="gradcam"), model)
    assert len(scores["query"]["insertion"]) == 2 and len(scores["neighbour"]["deletion"]) == 2


# -- gradcam equals pytorch-grad-cam on a ViT ---------------------------------------------------------------------------
class _Embedder(torch.nn.Module):
    """timm's own forward (not simx's split), as pytorch-grad-cam sees a model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


class _CosineTo:
    def __init__(self, ref):
        self.ref = ref

    def __call__(self, out):
        return torch.nn.functional.cosine_similarity(out, self.ref, dim=0)


def test_gradcam_on_a_vit_equals_pytorch_grad_cam_with_a_token_reshape(images):
    from pytorch_grad_cam import GradCAM

    model = toy.tiny_vit_token()
    ours = explain(model, images[0], images[1:], method="gradcam", side="neighbour")
    query_embedding = PairContext(model, images[0], images[1:]).query_embedding[0]
    layer = model.net.blocks[int(model.layer.split(".")[1])]
    p = model.num_prefix_tokens

    def reshape_transform(tokens):  # drop the class token, (B, T, C) -> (B, C, h, w)
        return tokens[:, p:].reshape(tokens.shape[0], 4, 4, tokens.shape[2]).permute(0, 3, 1, 2)

    x = torch.stack(images[1:]).requires_grad_(True)
    with GradCAM(model=_Embedder(model.net), target_layers=[layer], reshape_transform=reshape_transform) as cam:
        cam(input_tensor=x, targets=[_CosineTo(query_embedding)] * 2)
        a = cam.activations_and_grads.activations[0].numpy()
        g = cam.activations_and_grads.gradients[0].numpy()
        theirs = np.maximum(cam.get_cam_image(x, layer, None, a, g), 0)
    assert theirs.shape == (2, 4, 4) and theirs.max() > 0
    np.testing.assert_allclose(ours.neighbour_feature_maps, theirs, rtol=1e-4, atol=1e-6 * theirs.max())


def test_jointcam_sums_to_the_similarity_on_a_mean_pooled_vit(images):
    model = toy.tiny_vit_avg()
    exp = explain(model, images[0], images[1:], method="jointcam")
    assert exp.joint.shape == (2, 16, 16)
    np.testing.assert_allclose(exp.joint.sum(axis=(1, 2)) + exp.extras["bias_terms"], exp.similarities, atol=1e-5)
    # and searchcam's maps are its marginals (the exact Shapley split of the feature-level game)
    sc = explain(model, images[0], images[1:], method="searchcam")
    np.testing.assert_allclose(sc.neighbour_feature_maps, exp.neighbour_feature_maps, atol=1e-6)


# -- attngrad ---------------------------------------------------------------------------------------------------------
def test_attngrad_all_pairs_at_once_equal_one_pair_at_a_time(images):
    model = toy.tiny_vit_reg()
    both = explain(model, images[0], images[1:], method="attngrad")
    assert both.cost.forward == 3 and both.cost.backward == 2  # the graph forwards are the floor; 1 backward a side
    for k in range(2):
        one = explain(model, images[0], [images[1 + k]], method="attngrad")
        np.testing.assert_allclose(both.query_feature_maps[k], one.query_feature_maps[0], rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(both.neighbour_feature_maps[k], one.neighbour_feature_maps[0], rtol=1e-5,
                                   atol=1e-9)
    assert (both.query_feature_maps >= 0).all() and both.query_feature_maps.max() > 0
    assert not np.allclose(both.query_feature_maps[0], both.query_feature_maps[1])  # each pair its own target


@pytest.mark.parametrize("family", ["vit_cls", "vit_registers", "vit_mean"])
def test_attngrad_fused_attention_record_equals_the_explicit_softmax(family, images, monkeypatch):
    """timm's plain attention is recorded as the fused kernel's A V (dS/dA = dS/dO V^T): the maps are those of the
    explicit softmax in the graph."""
    from simx.models import tokens
    from simx.models.attention_record import SoftmaxAttention

    model = FAMILIES[family]()
    sink: list = []
    with torch.no_grad(), tokens.recording([model.net.blocks[0].attn], sink):
        model.net.blocks[0].attn(torch.randn(1, 5, 32))
    assert isinstance(sink[0], SoftmaxAttention)  # the fused path is the one taken
    fused = explain(model, images[0], images[1:], method="attngrad")
    monkeypatch.setattr(tokens, "can_replay", lambda mod: False)
    explicit = explain(model, images[0], images[1:], method="attngrad")
    for side in ("query", "neighbour"):
        a, b = getattr(fused, f"{side}_feature_maps"), getattr(explicit, f"{side}_feature_maps")
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())
    np.testing.assert_allclose(fused.similarities, explicit.similarities, atol=1e-6)


def test_attngrad_rollout_formula_on_one_block():
    from simx.explain.methods.attngrad import rollout

    a = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    g = torch.randn(1, 2, 3, 3)
    abar = (g * a).clamp_min(0).mean(1)
    torch.testing.assert_close(rollout([a, a], [g, g]), (torch.eye(3) + abar) @ (torch.eye(3) + abar))


def test_attngrad_reads_the_rollout_row_without_forming_it():
    from simx.explain.methods.attngrad import read_rollout, rollout

    g = torch.Generator().manual_seed(1)
    attn = [torch.softmax(torch.randn(2, 3, 5, 5, generator=g), -1) for _ in range(4)]
    grads = [torch.randn(2, 3, 5, 5, generator=g) for _ in range(4)]
    w = torch.zeros(2, 5)
    w[0, 0], w[1, 1:] = 1.0, 0.25  # a class-token row; the mean of the patch rows
    expected = (w.unsqueeze(1) @ rollout(attn, grads)).squeeze(1)
    torch.testing.assert_close(read_rollout(w, attn, grads), expected)


def test_attngrad_forward_with_the_graph_is_the_floor_even_when_cached(images):
    from simx.explain.engine import estimate

    model = toy.tiny_vit_token()
    explain(model, images[0], images[1:], method="gradcam")  # the unperturbed features are now cached
    pair = PairContext(model, images[0], images[1:])
    assert pair.uncached() == 0
    est = estimate(model, "attngrad", pair=pair)
    exp = explain(model, images[0], images[1:], method="attngrad")
    assert (est.forward, est.backward) == (exp.cost.forward, exp.cost.backward) == (3, 2)
    np.testing.assert_allclose(exp.similarities, explain(model, images[0], images[1:], method="gradcam").similarities,
                               atol=1e-6)


def test_attngrad_refuses_windowed_attention_and_cnns(images):
    with pytest.raises(ExplainError, match="global self-attention"):
        explain(toy.tiny_swin(), images[0], images[1:], method="attngrad")
    with pytest.raises(ExplainError, match="global self-attention"):
        explain(toy.tiny_linear(size=32), images[0], images[1:], method="attngrad")


# -- text queries -----------------------------------------------------------------------------------------------------
def test_text_query_neighbours_explained_on_the_image_side(images):
    model = toy.tiny_openclip()
    exp = explain_text(model, "a red double-decker bus", images, method="gradcam")
    assert exp.query_maps is None and exp.neighbour_maps.shape == (3, 32, 32)
    text = model.embed_texts(["a red double-decker bus"])[0]
    img = model.normalise_embeddings(model.embed(torch.stack(images))).numpy()
    np.testing.assert_allclose(exp.similarities, img @ text, atol=1e-5)
    scores = faithfulness(exp, model)  # scored against the text embedding
    assert "query" not in scores and len(scores["neighbour"]["insertion"]) == 3
    rise = explain_text(model, "a red double-decker bus", images, method="rise", n_samples=32)
    assert rise.neighbour_maps.shape == (3, 32, 32)
    with pytest.raises(ExplainError, match="text query has no cells"):
        explain_text(model, "a bus", images, method="jointsbsm")
    with pytest.raises(ExplainError, match="no text tower"):
        explain_text(toy.tiny_vit_token(), "a bus", images)


def test_sane_refuses_imagenet_cams_on_a_class_token_vit(images):
    from simx.models import load_model

    model = load_model("timm:vit_tiny_patch16_224", device="cpu", cache=False)  # random, keeps a 1000-class head
    assert model.num_prefix_tokens == 1 and model._classifier is not None
    x = torch.nn.functional.interpolate(torch.stack(images), size=224)
    with pytest.raises(ExplainError, match="class activation maps cannot be formed"):
        explain(model, x[0], [x[1]], method="sane")
