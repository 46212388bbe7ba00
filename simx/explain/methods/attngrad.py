"""``attngrad``: gradient-weighted attention rollout with the similarity as target (transformer-native).

For vision transformers with global attention (ViT, DeiT, DINOv2, SigLIP, EVA-02, CLIP / OpenCLIP towers). The
rule is the gradient-weighted rollout of Chefer, Gur and Wolf ("Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, eq. 5-6), in the spirit of LeGrad (Bousselham
et al., ICCV 2025: attention maps weighted by the positive part of the gradient of the target), with the pair's
similarity s(x, y) as the target instead of a class logit. methods.md has no section on attention methods; the
formulas used are:

    for every block l (attention probabilities A_l, (heads, T, T), and their gradient dA_l = d s / d A_l):
        Abar_l = mean_heads ReLU(dA_l * A_l)                         (T, T)
    R_0 = I;   R_l = R_{l-1} + Abar_l R_{l-1}                          (token-to-token relevance)
    r = readout(R_L)                                                   (T,)
    map(i) = r[P + i] on the patch grid (P = class / distillation / register tokens)

``readout`` is the row the embedding reads: the class token's row for class-token pooling (the mean of the class and
distillation rows for DeiT), the mean of the patch rows for mean pooling and for attention-pool (MAP) heads, whose
latent query reads every patch (the pool's own attention is not part of the rollout). The maps are non-negative by
construction (ReLU per block, products of non-negative matrices); R_0 = I keeps each patch's own path, so the map is
never all-zero where gradients vanish.

Batching and cost (all K pairs at once): the engine's unperturbed forward of the K + 1 images records the autograd
graph and every attention map (``records_graph``: one graph for the query, one for the K neighbours), so there is
no second forward. The neighbour side differentiates sum_k s(x, y_k) (x's embedding detached) in ONE backward pass
through the neighbours' graph: s_k only depends on y_k's attention, so each image's gradients are its own pair's.
The query side takes the K gradients d s(x, y_k) / d A_l(x) in one *batched* backward through the query's graph
(``is_grads_batched``, a vmap over the K cotangents), falling back to K backward calls on ops without a batching
rule (counted either way). timm's plain attention blocks (ViT, DeiT, DINOv2, SigLIP) are recorded through the fused
attention kernel: the graph holds O = A V, and dS/dA = (dS/dO) V^T with A formed once without the graph
(:mod:`simx.models.attention_record`), instead of an explicit softmax back-propagated through. The readout row of the rollout is pushed through the blocks as a vector (T^2 per block,
not the T^3 of forming R). So a pair costs K + 1 forwards with the graph and 2 backward calls; unlike gradcam it
backpropagates through every block, which is the price of seeing how attention routed the evidence (measured in
docs/benchmarks.md, issue 13).

Refused, with the reason, for models without a global attention matrix (CNNs, Swin's shifted windows).
"""

from __future__ import annotations

import torch

from ...errors import ExplainError, SimxError
from ...models.attention_record import graph_targets, probabilities_and_gradients
from ..base import MethodOutput, register
from ..engine import PairContext
from .gradcam import row_similarity


def _check(ctx: PairContext) -> None:
    model = ctx.model
    if not hasattr(model, "run_from_input") or not getattr(model, "global_attention", False):
        raise ExplainError(f"attngrad needs a transformer with global self-attention (ViT, DeiT, DINOv2, SigLIP, EVA, "
                           f"CLIP); model {model.spec!r} has none (a CNN, or Swin's shifted windows): use gradcam, "
                           "searchcam or a perturbation method")


def rollout(attn: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """Chefer et al. eq. 5-6: R = prod_l (I + mean_h ReLU(grad_l * A_l)) applied in block order -> (B, T, T)."""
    r = None
    for a, g in zip(attn, grads):
        abar = _weighted(a, g)
        if r is None:
            r = torch.eye(abar.shape[-1], device=abar.device).expand_as(abar).clone()
        r = r + abar @ r
    if r is None:
        raise ExplainError("attngrad: the model recorded no attention maps")
    return r


def _weighted(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Abar = mean_heads ReLU(dA * A), (B, T, T)."""
    return (g.float() * a.float()).clamp_min(0).mean(dim=1)


def read_rollout(readout: torch.Tensor, attn: list[torch.Tensor], grads: list[torch.Tensor]) -> torch.Tensor:
    """``readout`` rows of the rollout, w^T R (B, T), without forming R: R = (I + Abar_L) ... (I + Abar_1), so
    w^T R is w pushed through the blocks from the last to the first (v <- v + v Abar_l), T^2 work per block
    instead of the T^3 of the matrix product (197 tokens on ViT-B/16: 200x less)."""
    if not attn:
        raise ExplainError("attngrad: the model recorded no attention maps")
    v = readout.float()
    for a, g in zip(reversed(attn), reversed(grads)):
        v = v + (v.unsqueeze(1) @ _weighted(a, g)).squeeze(1)
    return v


def _maps(ctx: PairContext, attn, grads, grid) -> torch.Tensor:
    if not attn:
        raise ExplainError("attngrad: the model recorded no attention maps")
    t, n = attn[0].shape[-1], grads[0].shape[0]
    # the readout is linear in the rows of R: its weights are the readout of the identity
    weights = ctx.model.readout(torch.eye(t, device=grads[0].device).expand(n, t, t))
    relevance = read_rollout(weights, attn, grads)  # (B, T)
    p = ctx.model.num_prefix_tokens
    return relevance[:, p:].reshape(-1, *grid)


def _recorded(ctx: PairContext, which: str):
    try:
        return ctx.recorded(which)
    except SimxError as exc:
        if isinstance(exc, ExplainError):
            raise
        raise ExplainError(f"attngrad: {exc}") from None


def neighbour_maps(ctx: PairContext) -> torch.Tensor:
    emb, records, grid = _recorded(ctx, "neighbours")
    other = ctx.query_embedding.detach().expand(ctx.k, -1).float()
    with torch.enable_grad():
        total = row_similarity(ctx.model, emb.float(), other).sum()
    grads = ctx.backward(total, graph_targets(records))
    ctx.release("neighbours")
    attn, dattn = probabilities_and_gradients(records, grads)
    return _maps(ctx, attn, dattn, grid)


def query_maps(ctx: PairContext) -> torch.Tensor:
    emb, records, grid = _recorded(ctx, "query")
    targets = graph_targets(records)
    with torch.enable_grad():
        sims = ctx.model.similarity(emb.float(), ctx.neighbour_embeddings.detach().float())[0]  # (K,)
    eye = torch.eye(ctx.k, device=sims.device, dtype=sims.dtype)
    ctx.check_cancelled()
    try:
        grads = torch.autograd.grad(sims, targets, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
        ctx.count(backward=1)
        grads = [g[:, 0] for g in grads]  # row k is d s_k / d target_l(x)
    except RuntimeError:  # an op without a batching rule: one backward per neighbour
        per_k = [torch.autograd.grad(sims[k], targets, retain_graph=True) for k in range(ctx.k)]
        ctx.count(backward=ctx.k)
        grads = [torch.cat([g[layer] for g in per_k]) for layer in range(len(targets))]
    ctx.release("query")
    attn, dattn = probabilities_and_gradients(records, grads)  # (1, ...) and (K, heads, T, T): row k for pair k
    attn = [a.expand(ctx.k, *a.shape[1:]) for a in attn]
    return _maps(ctx, attn, dattn, grid)


def passes(k: int, side: str, size: tuple[int, int], params: dict) -> tuple[int, int]:
    """One backward pass per side; the forwards with the graph are the engine's K + 1 unperturbed ones."""
    return 0, 1


@register("attngrad", "Gradient-weighted attention rollout with the similarity as target (Chefer et al. 2021, "
          "LeGrad-style); transformers with global attention; all K pairs in one backward pass per side",
          kind="gradient", needs_features=True, passes=passes, records_graph=True)
def attribute(ctx: PairContext, side: str) -> MethodOutput:
    _check(ctx)
    out = MethodOutput(params={"rule": "R = prod (I + mean_h ReLU(dA * A))", "metric": ctx.model.metric})
    if side == "query":
        out.query_feature_maps = query_maps(ctx).cpu().numpy()
    if side == "neighbour":
        out.neighbour_feature_maps = neighbour_maps(ctx).cpu().numpy()
    return out
