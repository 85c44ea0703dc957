"""SVD-residual linear layers (Effort, Yan et al., ICML 2025): learn only the smallest singular directions.

A weight W (out x in) is split row-wise into `splits` blocks (timm's fused qkv -> q, k, v) and each block is
decomposed, W_i = U Σ Vᵀ. The top r = min(out_i, in) - k directions stay frozen as W_main; the last k are
trainable factors U_res (out_i x k), S_res (k), V_res (k x in), initialised at their SVD values, so the layer
starts exactly where the pretrained one was:

    W_i = W_main,i + U_res,i · diag(S_res,i) · V_res,i

W_main is stored as W_i minus the initial residual (not recomposed from the top factors), so at
initialisation the layer reproduces the original weight to float32 rounding whatever the SVD's precision.
`merged()` folds the factors back into a plain nn.Linear for export.

Optional regularisers (Effort's commented-out terms; the released face config trains with CE only):
  orthogonality  L_orth = ½‖ŨᵀŨ − I‖_F + ½‖ṼṼᵀ − I‖_F, Ũ = [U_r | U_res], Ṽ = [V_r ; V_res]
  energy         L_ksv  = | ‖W_main + U_res S_res V_res‖_F² − ‖W_orig‖_F² |
Only U_res and V_res move, so ‖ŨᵀŨ − I‖² = c_U + 2‖U_rᵀU_res‖² + ‖U_resᵀU_res − I‖² with the constant
c_U = ‖U_rᵀU_r − I‖² kept from initialisation: the exact value at O(out·r·k) instead of O(out·r²).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SVDResidualLinear"]


class SVDResidualLinear(nn.Module):
    """A Linear whose weight is frozen top-singular part + trainable last-k singular factors, per row block."""

    def __init__(self, linear: nn.Linear, k: int = 1, splits: int = 1, keep_basis: bool = False) -> None:
        super().__init__()
        out_features, in_features = linear.weight.shape
        if out_features % splits:
            raise ValueError(f"cannot split a {out_features}x{in_features} weight into {splits} row blocks")
        rows = out_features // splits
        rank = min(rows, in_features)
        if not 1 <= k < rank:
            raise ValueError(f"finetune.k must be in [1, {rank - 1}] for a {rows}x{in_features} block, got {k}")
        self.in_features, self.out_features, self.splits, self.k = in_features, out_features, splits, k
        weight = linear.weight.detach()
        # float32 SVD: W_main below is exact whatever its precision; only the frozen basis (orthogonality
        # regulariser) inherits SVD rounding, ~1e-6, far below any loss that matters. A CPU model is decomposed
        # on the GPU when there is one (ViT-L/14: 96 SVDs of 1024 x 1024, ~0.3 s each on a CPU core).
        work = torch.device("cuda") if weight.device.type == "cpu" and torch.cuda.is_available() else weight.device
        blocks = weight.to(work, torch.float32).reshape(splits, rows, in_features)
        u, s, vh = torch.linalg.svd(blocks, full_matrices=False)  # (S,rows,m) (S,m) (S,m,in)
        r = rank - k
        main = blocks - (u[..., r:] * s[..., r:].unsqueeze(-2)) @ vh[..., r:, :]
        dtype, device = weight.dtype, weight.device
        blocks, u, s, vh, main = (t.to(device) for t in (blocks, u, s, vh, main))
        u_res, s_res, v_res = u[..., r:], s[..., r:], vh[..., r:, :]
        self.weight_main = nn.Parameter(main.to(dtype), requires_grad=False)
        self.U_res = nn.Parameter(u_res.to(dtype).contiguous())
        self.S_res = nn.Parameter(s_res.to(dtype).contiguous())
        self.V_res = nn.Parameter(v_res.to(dtype).contiguous())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        self.register_buffer("energy_orig", blocks.square().sum((1, 2)).to(dtype))
        if keep_basis:
            self.register_buffer("U_main", u[..., :r].to(dtype).contiguous())
            self.register_buffer("V_main", vh[..., :r, :].to(dtype).contiguous())
            eye = torch.eye(r, dtype=u.dtype, device=u.device)
            self.register_buffer("orth_const_u", (u[..., :r].mT @ u[..., :r] - eye).square().sum((1, 2)).to(dtype))
            self.register_buffer("orth_const_v", (vh[..., :r, :] @ vh[..., :r, :].mT - eye).square().sum((1, 2))
                                 .to(dtype))

    @property
    def weight(self) -> torch.Tensor:
        """The effective (out, in) weight; a property so code reading `.weight` (timm's Eva qkv) sees it too."""
        residual = (self.U_res * self.S_res.unsqueeze(-2)) @ self.V_res
        return (self.weight_main + residual).reshape(self.out_features, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F.linear with the effective weight (recomposed per call: the factors are what trains)."""
        return F.linear(x, self.weight, self.bias)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with the effective weight and the bias: what export writes."""
        w = self.weight.detach()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=w.device, dtype=w.dtype)
        with torch.no_grad():
            linear.weight.copy_(w)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def orthogonality_loss(self) -> torch.Tensor:
        """Σ over blocks of ½‖ŨᵀŨ − I‖_F + ½‖ṼṼᵀ − I‖_F (float32), exact via the frozen-basis constants."""
        if not hasattr(self, "U_main"):
            raise RuntimeError("the orthogonality loss needs the frozen basis: build with keep_basis=True")
        u, v = self.U_res.float(), self.V_res.float()
        eye = torch.eye(self.k, device=u.device)
        u_sq = self.orth_const_u.float() + 2 * (self.U_main.float().mT @ u).square().sum((1, 2)) \
            + (u.mT @ u - eye).square().sum((1, 2))
        v_sq = self.orth_const_v.float() + 2 * (self.V_main.float() @ v.mT).square().sum((1, 2)) \
            + (v @ v.mT - eye).square().sum((1, 2))
        # sqrt's gradient is infinite at 0; a perfectly orthogonal start must not produce NaNs.
        return (0.5 * u_sq.clamp_min(1e-12).sqrt() + 0.5 * v_sq.clamp_min(1e-12).sqrt()).sum()

    def energy_loss(self) -> torch.Tensor:
        """Σ over blocks of |‖W_eff‖_F² − ‖W_orig‖_F²| (float32): keeps the total singular-value energy."""
        eff = self.weight.float().reshape(self.splits, -1, self.in_features)
        return (eff.square().sum((1, 2)) - self.energy_orig.float()).abs().sum()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, splits={self.splits}, k={self.k}"
