"""The normalizing-flow metric layer (determinant-regularisation paper, SPEC §3): R^d → R^d, invertible, with an
exact per-sample log|det J| that the `det` regulariser and the Jacobian-determinant map both read.

affine   (Real-NVP): per block ActNorm → affine coupling y_b = x_b·exp(s(x_a)) + t(x_a), s tanh-bounded.
additive (NICE):    per block additive coupling y_b = x_b + t(x_a) (volume preserving), then one final
                    diagonal scaling; its log|det J| is the same for every input, which is why NICE gives the
                    regulariser little to work with (the paper's ablation).
Between blocks a fixed random orthogonal 1×1 mixing (|det| = 1, inverse = transpose) lets every coordinate be
transformed; it has no parameters, so the log-determinant lives only where the flow adapts.

The network feeds the flow L2-normalised head outputs u and normalises its output z (both on the unit sphere);
the `det` regulariser reads `sphere_log_volume`, the log-volume change of that sphere-to-sphere map —
docs/determinant.md says why (no free gauge).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

# s = S·tanh(raw/S): a coupling can scale each coordinate by at most e^±2 — big enough to learn, small enough
# that a few blocks cannot blow up early in training.
_SCALE_BOUND = 2.0


class ActNorm(nn.Module):
    """Per-coordinate affine z = (x + b)·exp(log_scale), log|det| = Σ log_scale (the same for every sample).

    With `data_init` the first training batch sets b and log_scale so that its output is zero-mean, unit-variance
    (Glow); otherwise it starts as the identity.
    """

    def __init__(self, dim: int, data_init: bool = False):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.data_init = data_init
        self.register_buffer("initialized", torch.tensor(not data_init))  # saved, so a loaded layer never re-inits

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # `data_init` first: reading the buffer would cost a GPU sync on every training step
        if self.data_init and self.training and not bool(self.initialized):
            if len(x) < 2:
                raise ValueError("ActNorm data initialisation needs a first batch of at least 2 samples")
            with torch.no_grad():
                self.bias.copy_(-x.mean(dim=0))
                self.log_scale.copy_(-torch.log(x.std(dim=0) + 1e-6))
                self.initialized.fill_(True)
        z = (x + self.bias) * torch.exp(self.log_scale)
        return z, self.log_scale.sum().expand(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return z * torch.exp(-self.log_scale) - self.bias


class Coupling(nn.Module):
    """Transforms the second part x_b of x = (x_a, x_b) conditioned on the first (odd dims: x_b is the bigger)."""

    def __init__(self, dim: int, hidden: int, affine: bool):
        super().__init__()
        self.split = dim // 2
        self.affine = affine
        width = dim - self.split
        self.net = nn.Sequential(nn.Linear(self.split, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * width if affine else width))
        # Zero last layer: every block starts as the identity (Glow's trick), so an untrained flow leaves the
        # embedding as it is and log|det J| = 0.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _scale_shift(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(x_a)
        if not self.affine:
            return torch.zeros_like(out), out
        raw, shift = out.chunk(2, dim=1)
        return _SCALE_BOUND * torch.tanh(raw / _SCALE_BOUND), shift

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, :self.split], x[:, self.split:]
        s, t = self._scale_shift(x_a)
        return torch.cat([x_a, x_b * torch.exp(s) + t], dim=1), s.sum(dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        y_a, y_b = y[:, :self.split], y[:, self.split:]
        s, t = self._scale_shift(y_a)
        return torch.cat([y_a, (y_b - t) * torch.exp(-s)], dim=1)


class OrthogonalMix(nn.Module):
    """A fixed random rotation/reflection Q (a buffer, saved with the model): |det Q| = 1, Q⁻¹ = Qᵀ.

    Q is orthogonal to the precision of the dtype the layer was *built* in; a float32 layer cast to float64 keeps
    float32's ~1e-7 error, so build in float64 when checking to float64 precision.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("Q", torch.linalg.qr(torch.randn(dim, dim))[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x @ self.Q.T, x.new_zeros(len(x))

    def inverse(self, z: Tensor) -> Tensor:
        return z @ self.Q


class FlowMetricLayer(nn.Module):
    """`forward(x) -> (z, logdet)` with logdet = log|det ∂z/∂x| per sample, shape (B,), exact; `inverse(z) -> x`."""

    def __init__(self, dim: int, depth: int, hidden: int, coupling: Literal["affine", "additive"] = "affine",
                 data_init: bool = False):
        super().__init__()
        if dim < 2:
            raise ValueError(f"the flow layer splits the embedding in two; dim must be at least 2, got {dim}")
        if depth < 1:
            raise ValueError(f"the flow layer needs depth ≥ 1 coupling blocks, got {depth}")
        if coupling not in ("affine", "additive"):
            raise ValueError(f"coupling must be 'affine' (Real-NVP) or 'additive' (NICE), got {coupling!r}")
        affine = coupling == "affine"
        layers: list[nn.Module] = []
        for block in range(depth):
            if affine:
                layers.append(ActNorm(dim, data_init))
            layers.append(Coupling(dim, hidden, affine))
            if block < depth - 1:
                layers.append(OrthogonalMix(dim))
        if not affine:
            layers.append(ActNorm(dim, data_init))  # NICE's final diagonal scaling (plus a volume-free shift)
        self.layers = nn.ModuleList(layers)
        self.coupling = coupling

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(len(x))
        for layer in self.layers:
            x, layer_logdet = layer(x)
            logdet = logdet + layer_logdet
        return x, logdet

    def inverse(self, z: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z)
        return z

    def coupling_scales(self, x: Tensor) -> Tensor:
        """(B, blocks × width) every affine coupling's log-scale s at each sample; (B, 0) for NICE (no scales)."""
        scales = []
        for layer in self.layers:
            if isinstance(layer, Coupling) and layer.affine:
                scales.append(layer._scale_shift(x[:, :layer.split])[0])
            x = layer(x)[0]
        return torch.cat(scales, dim=1) if scales else x.new_zeros(len(x), 0)


def saturated(scales: Tensor, tolerance: float = 0.01) -> Tensor:
    """Which coupling log-scales lie within `tolerance` (relative) of their tanh bound ±_SCALE_BOUND: a flow whose
    scales all sit there is an input-independent contraction or expansion with dead coupling networks."""
    return scales.abs() >= (1.0 - tolerance) * _SCALE_BOUND


def sphere_log_volume(flow: FlowMetricLayer, u: Tensor, z: Tensor, logdet: Tensor) -> Tensor:
    """log of the (D−1)-volume change of the sphere-to-sphere map u ↦ ẑ = z/‖z‖, z = flow(u), at each unit u.

    J_S = Pᵀ_ẑ·(I − ẑẑᵀ)/‖z‖·J·P_u with J = ∂z/∂u (D × D) and P orthonormal tangent bases. Nanson's formula
    (the flow maps u's tangent plane to the plane with normal J⁻ᵀu, scaling its volume by |det J|·‖J⁻ᵀu‖),
    then the projection onto ẑ's tangent plane (a factor |cos| between the normals) and 1/‖z‖ per direction:
        log|det J_S| = log|det J| + log|⟨J⁻ᵀu, z⟩| − D·log‖z‖.
    Neither a scale before the flow (u is normalised) nor one after it (ẑ is) can change it. J⁻ᵀu = (∂u/∂z)ᵀu
    is one vector-Jacobian product through the inverse flow; with grad enabled and z in the graph it stays
    differentiable (double backward), otherwise it is computed on a detached copy.
    """
    keep_graph = torch.is_grad_enabled() and z.requires_grad
    # at least float32 and outside autocast: under mixed precision a log-volume in half is noise
    wide = torch.promote_types(z.dtype, torch.float32)
    with torch.enable_grad(), torch.autocast(z.device.type, enabled=False):
        z_wide = z.to(wide) if keep_graph else z.detach().to(wide).requires_grad_(True)
        inverse = flow.inverse(z_wide)
        (normal,) = torch.autograd.grad(inverse, z_wide, grad_outputs=u.to(inverse.dtype), create_graph=keep_graph)
    if not keep_graph:
        z_wide = z_wide.detach()
    cosine_part = torch.log((normal * z_wide).sum(dim=1).abs())  # elementwise and reductions: fp32 under autocast
    return logdet.to(wide) + cosine_part - z.shape[1] * torch.log(torch.linalg.vector_norm(z_wide, dim=1))
