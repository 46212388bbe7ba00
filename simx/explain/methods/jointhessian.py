"""``jointhessian``: the Hessian (second-order Taylor) joint map for any differentiable head (methods.md 6.7).

Joint Grad-CAM in Hessian form (6.7): with p(x) the pooled vector of the explained layer (methods.md 1),

    J[i, j] = F(x)[:, i]^T H F(y)[:, j] / (n_x n_y),      H = d^2 s / (d p(x) d p(y)^T)   (C x C),

the cross term of the second-order Taylor expansion of s in the feature vectors of the two images. Forms:

``closed`` (a pooled + linear head e = W p + b, no backward pass):
  * ``ip``: H = W^T W, so J = K of 6.6 exactly (equals ``jointcam``);
  * ``cosine``, with u = e(x), v = e(y), u^ = u / ||u||, v^ = v / ||v||:
    H = W^T (I - u^ u^T)(I - v^ v^T) W / (||u|| ||v||)  (6.7), i.e.
    J = [(I - u^ u^T) W F(x)]^T [(I - v^ v^T) W F(y)] / (n_x n_y ||u|| ||v||).
    This is the true curvature of the cosine; it is NOT jointcam's cosine K, which holds the norms fixed
    (6.6). With ``fixed_norms=True`` the norms are held at their unmasked values, H = W^T W / (||u|| ||v||), and J
    equals jointcam's cosine K exactly. With b = 0 the full-cosine J has zero row and column sums
    ((I - u^ u^T) u = 0): it shows which cells align *more than average*, a relative correspondence.
  * ``l2`` (s = -||u - v||^2): H = 2 W^T W, J = 2 K_ip (equals jointcam's l2 block).
  * GMP heads: p = sum_i F~[:, i] with F~ the per-channel arg-max map (6.6, GMP variant) and d^2 max = 0 almost
    everywhere, so J = F~(x)^T H F~(y) without the 1/n factors.

``pooled`` (autograd; the head factors through the spatial mean, e = g(mean F), checked numerically once):
  H is obtained with batched vector-Jacobian products (``torch.autograd.grad(..., is_grads_batched=True)``, i.e.
  vmap over the backward) of d s / d p(x) w.r.t. p(y): min(C, n_x) vectors in one batched call for all K pairs
  (the vectors are the C unit vectors when C <= n_x, giving H itself, else the n_x vectors F(x)[:, i] / n_x,
  giving the rows F(x)[:, i]^T H / n_x directly), never a Python loop of C backward passes.

``positions`` (autograd; any differentiable head, e.g. an explained layer before the last block or a GMP + MLP head):
  the general second-order Taylor cross term at feature level,
  J[i, j] = sum_{c, c'} F(x)[c, i] F(y)[c', j] d^2 s / (d F(x)[c, i] d F(y)[c', j]),
  which for a GAP head reduces to the formula above (d p / d F[:, i] = I / n). Computed as one gradient with
  ``create_graph`` (a_i = <d s / d F(x)[:, i], F(x)[:, i]>, the first-order Taylor term) and one batched VJP of the
  n_x values a_i w.r.t. F(y).

``auto`` picks closed, then pooled, then positions. Exact for linear heads (6.7); for non-linear heads it is the
local second-order approximation at the unmasked point (checked against finite differences in the tests).

Marginals: ``query_feature_maps[k][i]`` = <d s / d F(x)[:, i], F(x)[:, i]> (gradient x input, the first-order
Taylor term), likewise on the neighbour; for a linear GAP head with ``ip`` (or ``fixed_norms`` cosine) these are
exactly searchcam's maps (2.2).

Cost (8): closed form: no pass beyond the cached features; autograd forms: 2 backward calls (one gradient, one
batched VJP over min(C, n_x) or n_x vectors, reported in ``extras["vjp_vectors"]``) for all K neighbours together.
"""

from __future__ import annotations

import torch

from ...errors import ExplainError
from ..base import MethodOutput, register
from ..engine import PairContext
from .jointcam import pooled_positions
from ..cells import grid_cells

FORMS = ("auto", "closed", "pooled", "positions")


def pair_similarity(metric: str, u: torch.Tensor, v: torch.Tensor, fixed_norms: bool = False,
                    norms: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Row-wise s(u_k, v_k) -> (K,). ``fixed_norms`` (cosine): divide by the given (unmasked) norms instead."""
    if metric == "ip":
        return (u * v).sum(-1)
    if metric == "l2":
        return -((u - v) ** 2).sum(-1)
    if metric == "cosine":
        if fixed_norms:
            nu, nv = norms if norms is not None else (u.norm(dim=-1).detach(), v.norm(dim=-1).detach())
            return (u * v).sum(-1) / (nu * nv)
        return (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    raise ExplainError(f"unsupported metric {metric!r}")


def metric_gradients(metric: str, u: torch.Tensor, v: torch.Tensor, fixed_norms: bool = False):
    """(d s / d u, d s / d v), each (K, D), for row-wise embeddings u, v (K, D)."""
    if metric == "ip":
        return v, u
    if metric == "l2":
        return -2 * (u - v), -2 * (v - u)
    nu, nv = u.norm(dim=-1, keepdim=True), v.norm(dim=-1, keepdim=True)
    if fixed_norms:
        return v / (nu * nv), u / (nu * nv)
    uh, vh = u / nu, v / nv
    s = (uh * vh).sum(-1, keepdim=True)
    return (vh - s * uh) / nu, (uh - s * vh) / nv


def _batched_vjp(outputs: torch.Tensor, inputs: torch.Tensor, n_vec: int, chunk: int = 256) -> torch.Tensor:
    """Rows of the Jacobian of ``outputs`` (K, n_vec) w.r.t. ``inputs`` (K, ...), summed over the batch axis K
    (entries of different k never interact): -> (n_vec, K, ...). One vmapped backward per chunk of vectors."""
    kk = outputs.shape[0]
    parts = []
    for start in range(0, n_vec, chunk):
        stop = min(n_vec, start + chunk)
        eye = torch.zeros(stop - start, kk, n_vec, dtype=outputs.dtype, device=outputs.device)
        eye[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        try:
            (g,) = torch.autograd.grad(outputs, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
        except RuntimeError:  # an op without a batching rule: fall back to one backward per vector
            g = torch.stack([torch.autograd.grad(outputs, inputs, grad_outputs=e, retain_graph=True)[0] for e in eye])
        parts.append(g)
    return torch.cat(parts)


def _head_factors_through_mean(ctx: PairContext, feats: torch.Tensor) -> bool:
    """True when head(F) == head(broadcast(mean F)) on the actual map, i.e. the head is g(GAP(F))."""
    with torch.inference_mode():
        e1 = ctx.model.head(feats)
        e2 = ctx.model.head(feats.mean(dim=(2, 3), keepdim=True).expand_as(feats).contiguous())
    return bool(torch.allclose(e1, e2, rtol=1e-4, atol=1e-5 * float(e1.abs().max()) + 1e-7))


def _closed(ctx: PairContext, metric: str, fixed_norms: bool):
    head = ctx.model.linear_head()
    fx, nx = pooled_positions(ctx.query_features, head.pool)  # (1, C, n_x)
    fy, ny = pooled_positions(ctx.neighbour_features, head.pool)  # (K, C, n_y)
    if head.weight is not None:
        w = head.weight.to(fx)
        fx, fy = torch.einsum("dc,bcn->bdn", w, fx), torch.einsum("dc,bcn->bdn", w, fy)
    px, py = fx[0] / nx, fy / ny  # W F / n: (D, n_x), (K, D, n_y)
    kk = py.shape[0]
    u = ctx.query_embedding.expand(kk, -1)  # e(x) incl. bias, (K, D)
    v = ctx.neighbour_embeddings  # (K, D)
    if metric == "ip":
        joint = torch.einsum("di,kdj->kij", px, py)
    elif metric == "l2":
        joint = 2.0 * torch.einsum("di,kdj->kij", px, py)
    elif fixed_norms:
        joint = torch.einsum("di,kdj->kij", px, py) / (u.norm(dim=1) * v.norm(dim=1)).view(-1, 1, 1)
    else:
        # [(I - u^u^T) P_x]^T [(I - v^v^T) P_y] = P_x^T P_y minus three rank-one terms (no (K, D, n) temporaries)
        uh, vh = u / u.norm(dim=1, keepdim=True), v / v.norm(dim=1, keepdim=True)
        xu, xv = uh @ px, vh @ px  # (K, n_x): u^.P_x[:, i], v^.P_x[:, i]
        yu, yv = torch.einsum("kd,kdj->kj", uh, py), torch.einsum("kd,kdj->kj", vh, py)  # (K, n_y)
        uv = (uh * vh).sum(1).view(-1, 1, 1)
        joint = (torch.einsum("di,kdj->kij", px, py) - xv.unsqueeze(2) * yv.unsqueeze(1)
                 - xu.unsqueeze(2) * yu.unsqueeze(1) + uv * xu.unsqueeze(2) * yv.unsqueeze(1))
        joint = joint / (u.norm(dim=1) * v.norm(dim=1)).view(-1, 1, 1)
    gu, gv = metric_gradients(metric, u, v, fixed_norms)
    qmap = torch.einsum("kd,di->ki", gu, px)
    nmap = torch.einsum("kd,kdj->kj", gv, py)
    return joint, qmap, nmap, {"vjp_vectors": 0}


def _pooled(ctx: PairContext, metric: str, fixed_norms: bool):
    model = ctx.model
    fx, fy = ctx.query_features, ctx.neighbour_features
    kk, c = fy.shape[0], fy.shape[1]
    (h1, w1), (h2, w2) = fx.shape[-2:], fy.shape[-2:]
    nx, ny = h1 * w1, h2 * w2
    xs, ys = fx[0].reshape(c, nx), fy.reshape(kk, c, ny)
    norms = (ctx.query_embedding.norm(dim=1).expand(kk), ctx.neighbour_embeddings.norm(dim=1))
    px = fx.mean(dim=(2, 3)).expand(kk, c).clone().requires_grad_(True)
    py = fy.mean(dim=(2, 3)).clone().requires_grad_(True)
    with torch.enable_grad():
        u = model.head(px[:, :, None, None].expand(kk, c, h1, w1))
        v = model.head(py[:, :, None, None].expand(kk, c, h2, w2))
        s = pair_similarity(metric, u, v, fixed_norms, norms)
        gx, gy = torch.autograd.grad(s.sum(), [px, py], create_graph=True)  # (K, C) each
        ctx.count(backward=1)
        if nx < c:
            a = gx @ (xs / nx)  # (K, n_x): <ds/dp(x), F(x)_i / n_x>
            rows = _batched_vjp(a, py, nx)  # (n_x, K, C): F(x)_i^T H_k / n_x
            joint = torch.einsum("ikc,kcj->kij", rows, ys) / ny
            n_vec = nx
        else:
            hess = _batched_vjp(gx, py, c)  # (C, K, C'): H_k[c, c']
            joint = torch.einsum("ci,ckd,kdj->kij", xs / nx, hess, ys / ny)
            n_vec = c
        ctx.count(backward=1)
    qmap = torch.einsum("kc,ci->ki", gx.detach(), xs) / nx
    nmap = torch.einsum("kc,kcj->kj", gy.detach(), ys) / ny
    return joint.detach(), qmap, nmap, {"vjp_vectors": n_vec}


def _positions(ctx: PairContext, metric: str, fixed_norms: bool):
    model = ctx.model
    fx, fy = ctx.query_features, ctx.neighbour_features
    kk, c = fy.shape[0], fy.shape[1]
    nx, ny = fx.shape[-1] * fx.shape[-2], fy.shape[-1] * fy.shape[-2]
    norms = (ctx.query_embedding.norm(dim=1).expand(kk), ctx.neighbour_embeddings.norm(dim=1))
    fxr = fx.expand(kk, *fx.shape[1:]).clone().requires_grad_(True)
    fyr = fy.clone().requires_grad_(True)
    with torch.enable_grad():
        s = pair_similarity(metric, model.head(fxr), model.head(fyr), fixed_norms, norms)
        gx, gy = torch.autograd.grad(s.sum(), [fxr, fyr], create_graph=True)
        ctx.count(backward=1)
        a = (gx * fx).sum(1).reshape(kk, nx)  # first-order Taylor term of every query position
        rows = _batched_vjp(a, fyr, nx, chunk=max(1, min(256, (1 << 26) // max(1, kk * c * ny))))
        ctx.count(backward=1)
    joint = (rows * fy.unsqueeze(0)).sum(2).reshape(nx, kk, ny).permute(1, 0, 2)
    qmap = a.detach()
    nmap = (gy.detach() * fy).sum(1).reshape(kk, ny)
    return joint.detach(), qmap, nmap, {"vjp_vectors": nx}


def pair_passes(ctx: PairContext, side: str, params: dict) -> tuple[int, int]:
    """No pass for a pooled + linear head (the closed form, chosen by ``form="auto"``), else the 2 backward calls
    of the autograd forms; without the model (``passes``) the 2 are an upper bound."""
    closed = params.get("form", "auto") in ("auto", "closed") and ctx.model.linear_head() is not None
    return 0, (0 if closed else 2)


@register("jointhessian", "Joint map from the Hessian of the similarity (second-order Taylor, 6.7) for any "
          "differentiable head; closed form for linear heads", kind="joint", needs_features=True,
          passes=lambda k, side, size, params: (0, 2), pair_passes=pair_passes)
def attribute(ctx: PairContext, side: str = "both", form: str = "auto", fixed_norms: bool = False) -> MethodOutput:
    metric = ctx.model.metric
    if form not in FORMS:
        raise ExplainError(f"jointhessian: form must be one of {', '.join(FORMS)}, got {form!r}")
    if fixed_norms and metric != "cosine":
        fixed_norms = False
    chosen = form
    if form == "auto":
        if ctx.model.linear_head() is not None:
            chosen = "closed"
        elif _head_factors_through_mean(ctx, ctx.query_features):
            chosen = "pooled"
        else:
            chosen = "positions"
    if chosen == "closed" and ctx.model.linear_head() is None:
        raise ExplainError(f"jointhessian form 'closed' needs a pooled + linear head; model {ctx.model.spec!r} has "
                           "another head (use form='auto')")
    if form == "pooled" and not _head_factors_through_mean(ctx, ctx.query_features):
        raise ExplainError("jointhessian form 'pooled' needs a head of the form g(GAP(F)); use form='positions'")
    fn = {"closed": _closed, "pooled": _pooled, "positions": _positions}[chosen]
    joint, qmap, nmap, extras = fn(ctx, metric, fixed_norms)
    kk = joint.shape[0]
    h1, w1 = ctx.query_features.shape[-2:]
    h2, w2 = ctx.neighbour_features.shape[-2:]
    out = MethodOutput(params={"metric": metric, "form": chosen, "fixed_norms": fixed_norms})
    out.joint = joint.float().cpu().numpy()
    out.query_cells = grid_cells((h1, w1), ctx.size)
    out.neighbour_cells = grid_cells((h2, w2), ctx.size)
    if side in ("query", "both"):
        out.query_feature_maps = qmap.reshape(kk, h1, w1).float().cpu().numpy()
    if side in ("neighbour", "both"):
        out.neighbour_feature_maps = nmap.reshape(kk, h2, w2).float().cpu().numpy()
    out.extras = extras
    return out


__all__ = ["attribute", "pair_similarity", "metric_gradients", "FORMS"]
