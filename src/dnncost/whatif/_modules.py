"""Small module-surgery helpers shared by the transformations."""
from __future__ import annotations

import torch
from torch import nn

from dnncost.core.inputs import ModelInputs


def replace_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule at dotted ``path`` is."""
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, new)


def conv_like(conv: nn.Conv2d, *, in_channels: int, out_channels: int, kernel_size: int | None = None,
              groups: int = 1, bias: bool | None = None, keep_geometry: bool = True) -> nn.Conv2d:
    """A new Conv2d on ``conv``'s device and dtype; with ``keep_geometry`` its stride, padding and
    dilation (else a plain 1x1-style layer: stride 1, no padding)."""
    kh, kw = conv.kernel_size if kernel_size is None else (kernel_size, kernel_size)
    geometry = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                    padding_mode=conv.padding_mode) if keep_geometry else {}
    return nn.Conv2d(in_channels, out_channels, (kh, kw), groups=groups,
                     bias=(conv.bias is not None) if bias is None else bias,
                     device=conv.weight.device, dtype=conv.weight.dtype, **geometry)  # type: ignore[arg-type]


def count_modules(root: nn.Module, kind: type[nn.Module]) -> int:
    """How many submodules of ``root`` are ``kind``."""
    return sum(isinstance(m, kind) for m in root.modules())


FAST_PATH_OWNERS = (nn.TransformerEncoderLayer,)  # source: torch/nn/modules/transformer.py,
# TransformerEncoderLayer.forward hands linear1.weight and linear2.weight to its fused inference kernel


def fast_path_linears(root: nn.Module) -> set[str]:
    """Paths of the linear layers whose weights a fused inference path reads directly (so they must
    stay nn.Linear): those inside a FAST_PATH_OWNERS layer."""
    return {f"{name}.{child}" if name else child
            for name, m in root.named_modules() if isinstance(m, FAST_PATH_OWNERS)
            for child, c in m.named_children() if isinstance(c, nn.Linear)}


def uncalled(root: nn.Module, kinds: tuple[type[nn.Module], ...], inputs: ModelInputs) -> set[str]:
    """Paths of the submodules of exactly these ``kinds`` that one forward of ``root`` (evaluation
    mode, no gradient, ``inputs``) does not call: their parent reads their weights directly (Swin's
    attention reads ``qkv.weight``), so replacing them would break it."""
    paths = {m: name for name, m in root.named_modules() if type(m) in kinds}
    seen: set[str] = set()
    hooks = [m.register_forward_hook(lambda module, args, out: seen.add(paths[module])) for m in paths]
    was_training = root.training
    try:
        root.eval()
        with torch.no_grad():
            root(*inputs.args, **inputs.kwargs)
    finally:
        for hook in hooks:
            hook.remove()
        root.train(was_training)
    return set(paths.values()) - seen


def weights_read_directly(root: nn.Module, kinds: tuple[type[nn.Module], ...],
                          inputs: ModelInputs) -> set[str]:
    """Paths of the ``kinds`` layers whose weights something other than their own forward reads:
    a fused inference path's (:func:`fast_path_linears`) and those no forward calls
    (:func:`uncalled`). A transformation that replaces layers leaves these alone."""
    return fast_path_linears(root) | uncalled(root, kinds, inputs)
