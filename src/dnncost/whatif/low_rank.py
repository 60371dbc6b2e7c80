"""Low-rank factorisation (Denton et al. 2014; Kim et al. 2016 for Tucker-2): each dense k x k
convolution becomes 1x1 (C_in -> R1) -> k x k (R1 -> R2) -> 1x1 (R2 -> C_out) from a truncated
higher-order SVD of its weight; each dense 1x1 convolution two 1x1 convolutions (C_in -> R -> C_out,
the first with the original's stride) and each linear layer two linear layers (in -> R -> out), both
from a truncated SVD of the weight matrix, R = the fraction of min(C_in, C_out). A layer is
factorised only where that cuts its multiply-accumulates (1x1 and linear: R (C_in + C_out) <
C_in C_out, so a square layer gains only below half rank). At full rank the function is unchanged.
Layers whose weights something other than their own forward reads are kept: a fused inference path
(TransformerEncoderLayer's feed-forward), a parent that never calls them (Swin's attention reads its
qkv layer's weight; found by one forward with hooks), and subclasses of nn.Linear
(nn.MultiheadAttention reads its output projection's weight)."""
from __future__ import annotations

import math

import torch
from torch import nn

from dnncost.whatif._modules import (
    conv_like,
    fast_path_linears,
    replace_submodule,
    weights_read_directly,
)
from dnncost.whatif.registry import Context, NotApplicable, Parameter, Variant, register


def _rank(fraction: float, size: int) -> int:
    return max(1, min(size, math.ceil(fraction * size)))


def conv_ranks(conv: nn.Conv2d, fraction: float) -> tuple[int, int]:
    """(R1, R2): the ranks of the input and output channel modes at ``fraction`` of full rank."""
    return _rank(fraction, conv.in_channels), _rank(fraction, conv.out_channels)


def conv_saves(conv: nn.Conv2d, fraction: float) -> bool:
    """True when the Tucker-2 form has fewer MACs per output pixel than ``conv``:
    C_in*R1*s_h*s_w (1x1 at the input resolution) + R1*R2*k_h*k_w + R2*C_out < C_in*C_out*k_h*k_w."""
    r1, r2 = conv_ranks(conv, fraction)
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    factored = conv.in_channels * r1 * sh * sw + r1 * r2 * kh * kw + r2 * conv.out_channels
    return factored < conv.in_channels * conv.out_channels * kh * kw


def leading_singular_vectors(a: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``rank`` leading left singular vectors of ``a`` (m x n), as the eigenvectors of the
    m x m Gram matrix a a^T: the same subspace as an SVD, far faster for the wide unfoldings of a
    convolution weight (an SVD of VGG's 512 x 4608 unfolding takes seconds on two cores)."""
    gram = (a.double() @ a.double().T)  # (m, m), in float64 so small singular values survive
    eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
    order = torch.argsort(eigenvalues, descending=True)[:rank]
    return vectors[:, order].to(a.dtype)


def factorise_conv(conv: nn.Conv2d, fraction: float) -> nn.Sequential:
    """Tucker-2 of ``conv`` at ``fraction`` (0, 1] of full rank: 1x1 -> k x k -> 1x1."""
    w = conv.weight.detach().float()  # (C_out, C_in, kh, kw)
    c_out, c_in = w.shape[:2]
    r1, r2 = conv_ranks(conv, fraction)
    u_out = leading_singular_vectors(w.reshape(c_out, -1), r2)  # (C_out, R2)
    u_in = leading_singular_vectors(w.transpose(0, 1).reshape(c_in, -1), r1)  # (C_in, R1)
    kh, kw = conv.kernel_size
    core = (u_out.T @ w.reshape(c_out, -1)).reshape(-1, c_in, kh, kw)  # (R2, C_in, kh, kw)
    core = torch.tensordot(core, u_in, dims=([1], [0])).permute(0, 3, 1, 2)  # (R2, R1, kh, kw)
    first = conv_like(conv, in_channels=c_in, out_channels=r1, kernel_size=1, bias=False,
                      keep_geometry=False)
    middle = conv_like(conv, in_channels=r1, out_channels=r2, bias=False)
    last = conv_like(conv, in_channels=r2, out_channels=c_out, kernel_size=1, keep_geometry=False)
    dtype = conv.weight.dtype
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None].to(dtype))  # (R1, C_in, 1, 1)
        middle.weight.copy_(core.to(dtype))
        last.weight.copy_(u_out[:, :, None, None].to(dtype))  # (C_out, R2, 1, 1)
        if conv.bias is not None and last.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, middle, last)


def matrix_rank(c_in: int, c_out: int, fraction: float) -> int:
    """R of a weight matrix (C_out x C_in) at ``fraction`` of its full rank min(C_in, C_out)."""
    return _rank(fraction, min(c_in, c_out))


def matrix_saves(c_in: int, c_out: int, fraction: float) -> bool:
    """True when in -> R -> out costs fewer MACs than in -> out: R (C_in + C_out) < C_in C_out."""
    return matrix_rank(c_in, c_out, fraction) * (c_in + c_out) < c_in * c_out


def svd_factors(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` (out, in) ~ second @ first from its SVD truncated at ``rank``: first (R, in) and second
    (out, R), each carrying the square root of the singular values."""
    u, s, vh = torch.linalg.svd(w.detach().float(), full_matrices=False)
    root = s[:rank].sqrt()
    return root[:, None] * vh[:rank], u[:, :rank] * root  # (R, in), (out, R)


def factorise_linear(linear: nn.Linear, fraction: float) -> nn.Sequential:
    """``linear`` as in -> R -> out from its SVD truncated at ``fraction`` (0, 1] of full rank."""
    r = matrix_rank(linear.in_features, linear.out_features, fraction)
    first_w, second_w = svd_factors(linear.weight, r)
    kwargs = dict(device=linear.weight.device, dtype=linear.weight.dtype)
    first = nn.Linear(linear.in_features, r, bias=False, **kwargs)
    second = nn.Linear(r, linear.out_features, bias=linear.bias is not None, **kwargs)
    with torch.no_grad():
        first.weight.copy_(first_w.to(linear.weight.dtype))  # (R, in)
        second.weight.copy_(second_w.to(linear.weight.dtype))  # (out, R)
        if linear.bias is not None and second.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def factorise_pointwise(conv: nn.Conv2d, fraction: float) -> nn.Sequential:
    """A dense 1x1 ``conv`` as 1x1 (C_in -> R, its stride and padding) -> 1x1 (R -> C_out, its bias)
    from the SVD of its (C_out, C_in) weight truncated at ``fraction`` (0, 1] of full rank."""
    c_out, c_in = conv.out_channels, conv.in_channels
    r = matrix_rank(c_in, c_out, fraction)
    first_w, second_w = svd_factors(conv.weight.reshape(c_out, c_in), r)
    first = conv_like(conv, in_channels=c_in, out_channels=r, bias=False)  # (R, C_in, 1, 1)
    second = conv_like(conv, in_channels=r, out_channels=c_out, keep_geometry=False)
    dtype = conv.weight.dtype
    with torch.no_grad():
        first.weight.copy_(first_w[:, :, None, None].to(dtype))  # (R, C_in, 1, 1)
        second.weight.copy_(second_w[:, :, None, None].to(dtype))  # (C_out, R, 1, 1)
        if conv.bias is not None and second.bias is not None:
            second.bias.copy_(conv.bias)
    return nn.Sequential(first, second)


def _dense_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups == 1 and m.padding_mode == "zeros"


def factorise(model: nn.Module, fraction: float, *, keep: frozenset[str] = frozenset()
              ) -> tuple[int, int, int]:
    """Factorise, in place, every layer of ``model`` where that saves MACs, except those at the
    paths in ``keep`` and those of a fused inference path; (k x k convolutions, 1x1 convolutions,
    linear layers) done."""
    convs = pointwise = linears = 0
    kept = keep | fast_path_linears(model)
    for name, m in list(model.named_modules()):
        if name in kept:
            continue
        if _dense_conv(m) and m.kernel_size != (1, 1) and conv_saves(m, fraction):
            replace_submodule(model, name, factorise_conv(m, fraction))
            convs += 1
        elif _dense_conv(m) and m.kernel_size == (1, 1) \
                and matrix_saves(m.in_channels, m.out_channels, fraction):
            replace_submodule(model, name, factorise_pointwise(m, fraction))
            pointwise += 1
        elif type(m) is nn.Linear and matrix_saves(m.in_features, m.out_features, fraction):
            replace_submodule(model, name, factorise_linear(m, fraction))
            linears += 1
    return convs, pointwise, linears


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


@register("low_rank", parameter=Parameter.RATIO, defaults=(0.5, 0.25), structural=True,
          summary="low-rank factorisation at this fraction of full rank: Tucker-2 (1x1-kxk-1x1) "
                  "for k x k convolutions, SVD for 1x1 convolutions and linear layers")
def low_rank(model: nn.Module, ratio: float | None, context: Context) -> Variant:
    """Factorise every conv and linear layer where rank ``ratio`` of full cuts its MACs, except
    those whose weights something else reads (a fused path, or a parent that never calls them)."""
    assert ratio is not None
    keep = weights_read_directly(model, (nn.Conv2d, nn.Linear),
                                 context.make_inputs(1, device=_device(model)))
    kept = (f"; {len(keep)} layers kept: a fused inference path or their parent reads their "
            "weights directly") if keep else ""
    convs, pointwise, linears = factorise(model, ratio, keep=frozenset(keep))
    if convs + pointwise + linears == 0:
        raise NotApplicable(f"no dense convolution or linear layer gets cheaper at {ratio:.0%} of "
                            f"full rank{kept}")
    return Variant(model, note=f"{convs} k x k convolutions (Tucker-2), {pointwise} 1x1 convolutions "
                               f"and {linears} linear layers (SVD) factorised at {ratio:.0%} of full "
                               f"rank; not fine-tuned{kept}")
