"""The counter: interpret a model at the level of aten operators, without doing its arithmetic.

A :class:`torch.utils._python_dispatch.TorchDispatchMode` sees every aten call -- functional ops,
attention, custom modules, and the backward pass of the real autograd graph -- after autograd has
decomposed composite ops. On the meta device no arithmetic happens, so counting time and memory do
not grow with batch or model size. Each call is costed by :mod:`dnncost.counting.formulas`, attributed to the
innermost module running (torch's ModuleTracker, which also follows backward) and to its phase.
"""
from __future__ import annotations

import contextlib
import copy
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
from torch import nn
from torch._prims_common import suggest_memory_format
from torch.nn.modules.module import register_module_forward_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten
from torch.utils.module_tracker import ModuleTracker

from dnncost.core.device import out_of_memory_as_error, resolve_device
from dnncost.core.errors import DnncostError, InputSpecError
from dnncost.core.failure import named_model_failure
from dnncost.core.inputs import ModelInputs, make_inputs, parse_dtype
from dnncost.core.options import with_overrides
from dnncost.core.step import (
    LOSS_MODULE,
    OPTIMIZER_MODULE,
    LossFn,
    Mode,
    OptimizerFactory,
    OptimizerKind,
    Part,
    build_step,
    make_optimizer,
    trainable_parameters,
)
from dnncost.counting.cost import Cost, CostReport, ModuleInfo, OpRecord, Phase
from dnncost.counting.formulas import TensorSpec, formula_for, is_view, tensors_in
from dnncost.models.loading import LoadedModel, load_model


@cache
def _schema_names(op: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    args = op._schema.arguments
    names = tuple(a.name for a in args)
    defaults = {a.name: a.default_value for a in args if a.has_default_value()}
    return names, defaults


def bind_arguments(op: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The op's arguments by schema name, defaults filled in."""
    names, defaults = _schema_names(op)
    bound = dict(defaults)
    bound.update(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _written(op: Any, bound: dict[str, Any]) -> list[TensorSpec]:
    """The tensors an in-place operator that returns nothing writes (its ``Tensor(a!)`` arguments,
    e.g. the parameters and state of Adam's ``_foreach_*_`` kernels)."""
    return [t for a in op._schema.arguments if a.alias_info is not None and a.alias_info.is_write
            for t in tensors_in(bound.get(a.name))]


def _spec(value: Any) -> Any:
    if not isinstance(value, torch.Tensor):
        return value
    if value.is_nested:  # padded size (B, max lengths...): exact without padding, an upper bound with
        sizes = value._nested_tensor_size()  # (B, dims of each component)
        padded = (int(sizes.shape[0]), *(int(d) for d in sizes.max(dim=0).values.tolist()))
        return TensorSpec(padded, value.dtype)
    return TensorSpec.of(value)


_KEEP_LAYOUT = (torch.ops.aten.convolution, torch.ops.aten.native_group_norm)  # source: measured,
# torch 2.14: on the CPU these keep a channels-last input's layout, their meta kernels return
# contiguous tensors


def _is_nhwc(value: Any) -> bool:
    """Whether ``value`` is a 4-D tensor torch runs channels-last (NHWC): its strides ordered so,
    dense or not, by torch's own rule (``suggest_memory_format``, as oneDNN's convolution picks its
    layout; a contiguous 1x1 map stays NCHW). A view need not be dense: MambaOut's gated block
    splits an NHWC tensor along its channels and permutes one part to NCHW, and its 7x7 depthwise
    convolutions on 1x1-2x2 maps ran on the channels-last kernels, 0.10 ms a call where the padded
    path they were counted for takes ~2.8 (source: measured, timm's mambaout_femto at 32x32, batch
    32, 2-core Xeon, torch 2.14)."""
    return isinstance(value, torch.Tensor) and value.dim() == 4 and not value.is_nested and \
        suggest_memory_format(value) == torch.channels_last


def _ints(value: Any) -> tuple[int, ...]:
    """A call's list-of-ints argument (a convolution's stride or padding) as a tuple; () for a
    missing one or any other value (a string padding such as "same" is resolved before aten)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, torch.SymInt)) for v in value):
        return tuple(int(v) for v in value)
    return ()


def _as_on_cpu(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> Any:
    """``out`` laid out as the CPU lays it out, on meta only (no data to move, nothing recorded:
    the mode is off inside its handler). A meta convolution or group norm of a channels-last input
    returns a contiguous output where the CPU's keeps the input's layout, and every later call (a
    ConvNeXt's whole stack after its first permutation) would be counted contiguous: restrided
    here. Where a dimension has size 1 (a 1x1 map, or its (B, 1, 1, C) permutation:
    :func:`_ambiguous`) meta and CPU kernels part ways further -- the CPU's GELU or sum of a
    channels-last 1x1 map returns NCHW strides, meta's keep the input's; a layer norm of a
    (B, 1, 1, C) permutation the other way round -- so a call (not a view) with such an output and
    small inputs is run on the CPU on zeros of its inputs' shapes and strides, and its outputs
    take the CPU's strides."""
    if func.overloadpacket in _KEEP_LAYOUT and args[0].device.type == "meta" and _is_nhwc(args[0]):
        if isinstance(out, torch.Tensor):
            return _nhwc_strided(out)
        return (_nhwc_strided(out[0]), *out[1:])
    outs = _listed(out)
    if func._schema.is_mutable or is_view(func) or \
            not any(isinstance(t, torch.Tensor) and _ambiguous(t) for t in outs):
        return out  # a view's strides follow its input's on meta as on the CPU; _ambiguous: meta only
    cpus = _listed(_run_on_cpu(func, args, kwargs))
    if len(cpus) != len(outs):
        return out
    laid = [o.as_strided(o.shape, c.stride()) if isinstance(o, torch.Tensor) and _ambiguous(o)
            and isinstance(c, torch.Tensor) and c.shape == o.shape else o
            for o, c in zip(outs, cpus, strict=True)]
    return laid[0] if isinstance(out, torch.Tensor) else type(out)(laid)


def _listed(value: Any) -> list[Any]:
    """A call's outputs as a list: a tuple's or list's items, else the one value."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


CPU_LAYOUT_MAX_ELEMENTS = 1 << 20  # source: our choice; a call on a 1x1 map whose every input is
# at most this size (4 MB of float32) is run on the CPU to read its layout; larger ones (a weight)
# are left as meta lays them out


def _ambiguous(t: torch.Tensor) -> bool:
    """Whether ``t`` is a 4-D meta tensor with a dimension of size 1 besides the batch (a 1x1 map,
    or its channels-last permutation (B, 1, 1, C)): the stride of that dimension is the kernel's
    choice, and a later permutation makes it the layout the next convolution's kernel reads."""
    return t.device.type == "meta" and t.dim() == 4 and 1 in t.shape[1:] and not t.is_nested


def _run_on_cpu(func: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """``func`` run on the CPU on zeros laid out as its meta tensors are; None when an input is
    too large or the call fails there. The CPU's random generator is left as it was (a dropout
    run here must not move the stream of a user who seeded it)."""
    flat, spec = tree_flatten((list(args), kwargs))
    tensors = [v for v in flat if isinstance(v, torch.Tensor)]
    if any(t.is_nested or t.numel() > CPU_LAYOUT_MAX_ELEMENTS or t.device.type != "meta"
           for t in tensors):
        return None
    real = [torch.empty_strided(v.shape, v.stride(), dtype=v.dtype).zero_()
            if isinstance(v, torch.Tensor) else v for v in flat]
    cpu_args, cpu_kwargs = tree_unflatten(real, spec)
    with torch.random.fork_rng(devices=[]):
        try:
            return func(*cpu_args, **cpu_kwargs)
        except Exception:  # noqa: BLE001 -- any failure: keep meta's layout
            return None


def _nhwc_strided(t: torch.Tensor) -> torch.Tensor:
    """A meta tensor of ``t``'s shape with channels-last strides, (H W C, 1, W C, C), as the CPU's
    convolution writes them -- on a 1x1 map too, where ``contiguous(memory_format=channels_last)``
    keeps NCHW strides (a 1x1 map is contiguous either way, so it is left as it is) and every later
    call's layout came out the CPU's opposite: a ConvNeXt's 7x7 depthwise convolutions on its last
    1x1 map, counted channels-last, ran the padded path at ~13 ms a call, and the one counted
    contiguous ran channels-last at 0.2 ms (source: measured, Hugging Face's ConvNext at 32x32,
    batch 32, 2-core EPYC, torch 2.14)."""
    n, c, h, w = t.shape
    return torch.empty((n, h, w, c), dtype=t.dtype, device=t.device).permute(0, 3, 1, 2)


def _channels_last(bound: dict[str, Any]) -> bool:
    """Whether any 4-D tensor argument of a call is stored channels-last (:func:`_is_nhwc`) --
    oneDNN's rule for running a convolution, forward or backward, channels-last: a ConvNeXt block's
    permutation back to NCHW leaves its output so, and every convolution after it runs on other
    kernels -- a 7x7 depthwise on a 2x2 map 76-116x faster forward than from a contiguous input, a
    dense 3x3 there ~2x slower (source: benchmarks/padded_conv.py --layouts, 2-core Xeon, torch
    2.14)."""
    return any(_is_nhwc(v) for v in tree_flatten(list(bound.values()))[0])


class _OrderedModuleTracker(ModuleTracker):
    """torch's ModuleTracker, also remembering the order modules were entered in.

    Its ``parents`` is a set: in backward, a parameter-free module on a residual shortcut stays
    entered until its input's gradient is complete, i.e. while the whole residual branch runs
    backward; the most recently entered module is then the right owner of an op, not the deepest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entered: dict[str, None] = {}  # insertion-ordered set of module names

    def _get_append_fn(self, name, is_bw):  # noqa: ANN001, ANN202
        append = super()._get_append_fn(name, is_bw)

        def fn(*args: Any) -> None:
            append(*args)
            self.entered.pop(name, None)
            self.entered[name] = None
        return fn

    def _get_pop_fn(self, name, is_bw):  # noqa: ANN001, ANN202
        pop = super()._get_pop_fn(name, is_bw)

        def fn(*args: Any) -> None:
            pop(*args)
            self.entered.pop(name, None)
        return fn

    def innermost(self) -> str:
        """Of the running modules none of whose submodules is running, the most recently entered
        ('Global' outside any). A parent and its child entered on the same gradient -> the child."""
        running = [n for n in self.entered if n in self.parents]
        leaves = [n for n in running if not any(o.startswith(n + ".") for o in running)]
        return leaves[-1] if leaves else "Global"


class _CountingMode(TorchDispatchMode):
    """Records one OpRecord per aten call; tracks live tensor bytes for the peak estimate."""

    def __init__(self, tracker: _OrderedModuleTracker, names: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.tracker = tracker
        self.names = names  # tracker name -> (module path, module class name)
        self.phase = Phase.FORWARD
        self.outside = LOSS_MODULE  # label for calls outside the model's modules
        self.records: list[OpRecord] = []
        self.unsupported: Counter[str] = Counter()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: set[int] = set()

    def where(self) -> tuple[str, str]:
        """(module path, module type) of the innermost module running now."""
        return self.names.get(self.tracker.innermost(), (self.outside, self.outside))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = _as_on_cpu(func, args, kwargs, func(*args, **kwargs))
        if is_view(func):
            return out
        formula = formula_for(func)
        name = str(func.overloadpacket).replace("aten::", "aten.")
        if formula is None:
            self.unsupported[name] += 1
        else:
            raw = bind_arguments(func, args, kwargs)
            bound = tree_map(_spec, raw)
            out_specs = tree_map(_spec, out)
            cost = formula(bound, out_specs if isinstance(out_specs, (tuple, list)) else (out_specs,))
            inputs = tensors_in(list(bound.values()))
            outputs = tensors_in(out_specs) or _written(func, bound)
            cost = Cost(cost.macs, cost.flops, sum(t.nbytes for t in inputs),
                        sum(t.nbytes for t in outputs))
            module, module_type = (OPTIMIZER_MODULE, OPTIMIZER_MODULE) \
                if self.phase is Phase.OPTIMIZER else self.where()
            self.records.append(OpRecord(name, self.phase, module, module_type, cost,
                                         tuple(t.shape for t in inputs), _channels_last(raw),
                                         _ints(raw.get("stride")), _ints(raw.get("padding"))))
        self._track_live(out)
        return out

    def _track_live(self, out: Any) -> None:
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            key = tensor.untyped_storage()._cdata
            if key in self._live:
                continue
            self._live.add(key)
            nbytes = tensor.untyped_storage().nbytes()
            self.live_bytes += nbytes
            self.peak_bytes = max(self.peak_bytes, self.live_bytes)
            weakref.finalize(tensor, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self.live_bytes -= nbytes


class _SavedActivations:
    """Bytes of tensors autograd saves for backward (unique storages, parameters excluded)."""

    def __init__(self, model: nn.Module) -> None:
        self._exclude = {t.untyped_storage()._cdata
                         for t in [*model.parameters(), *model.buffers()]}
        self._seen: set[int] = set()
        self.nbytes = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        key = tensor.untyped_storage()._cdata
        if key not in self._exclude and key not in self._seen:
            self._seen.add(key)
            self.nbytes += tensor.untyped_storage().nbytes()
        return tensor

    def hooks(self) -> torch.autograd.graph.saved_tensors_hooks:
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def _to_device_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device``; onto meta without copying any weight data."""
    if device.type != "meta":
        return copy.deepcopy(model).to(device)
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _model_inputs(inputs: Any, shape: tuple[int, ...] | None, *, batch_size: int,
                  device: torch.device, dtype: torch.dtype | None, channels_last: bool) -> ModelInputs:
    if inputs is None:
        if shape is None:
            raise InputSpecError("no input given: pass inputs= (tensors, a dict of keyword tensors or "
                                 "an input spec such as '16:int64') or input_shape= (one sample)")
        inputs = shape
    return make_inputs(inputs, batch_size=batch_size, device=device, dtype=dtype,
                       channels_last=channels_last)


def _output_shapes(module: nn.Module) -> tuple[dict[str, str], Any]:
    """A global forward hook recording each module's first output shape ('2x16x64'; several joined
    by ', '). Global, not per module: a module's own hooks switch off fast paths such as
    TransformerEncoderLayer's fused kernel, which would change what is counted."""
    shapes: dict[str, str] = {}
    paths = {id(m): path for path, m in module.named_modules()}

    def hook(mod: nn.Module, _args: Any, out: Any) -> None:
        path = paths.get(id(mod))
        if path is not None and path not in shapes:
            shapes[path] = ", ".join("x".join(map(str, _spec(t).shape)) + ("(nested)" * t.is_nested)
                                     for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
    return shapes, register_module_forward_hook(hook)


def _module_infos(module: nn.Module, shapes: dict[str, str]) -> tuple[ModuleInfo, ...]:
    return tuple(ModuleInfo(path, type(m).__name__, sum(p.numel() for p in m.parameters()),
                            shapes.get(path, "")) for path, m in module.named_modules())


META_HINT = ("on the meta device, where tensors have no values; counting on real tensors "
             "(device 'cpu') works for models that read values or lack a meta kernel")


@dataclass(frozen=True, kw_only=True)
class CountOptions:
    """How a step is counted, beyond its mode and batch: where (``device``: 'meta', the default,
    does no arithmetic; any other device counts on real tensors there), with which ``optimizer``
    (SGD with momentum by default; a name or a factory) and ``loss`` (default: cross-entropy), and
    in which precision: ``dtype`` casts the model's floating parameters and inputs (bfloat16,
    float16), ``autocast`` counts the forward under ``torch.autocast`` to that dtype (on real
    tensors only: autocast does not act on meta tensors), ``channels_last`` uses that memory format."""

    device: torch.device | str = "meta"
    optimizer: OptimizerKind | str | OptimizerFactory = "sgd"
    loss: LossFn | None = None
    dtype: torch.dtype | str | None = None
    autocast: torch.dtype | str | None = None
    channels_last: bool = False


def count(model: nn.Module | str | LoadedModel, inputs: Any = None, *, mode: Mode | str = Mode.EVAL,
          batch_size: int = 1, input_shape: Sequence[int] | None = None, name: str | None = None,
          options: CountOptions | None = None, **overrides: Any) -> CostReport:
    """Count what ``model`` costs on ``inputs`` or ``input_shape`` (one sample).

    ``inputs``: a tensor, a tuple of positional tensors, a dict of keyword tensors
    (``{"input_ids": ids, "attention_mask": mask}``), or an input spec (``'16:int64'``,
    ``'3x224x224,4'``; see :mod:`dnncost.core.inputs`) made with ``batch_size`` samples.
    ``options`` (:class:`CountOptions`, or keyword ``overrides`` of its fields such as
    ``optimizer="adam"`` or ``device="cpu"``) say where, with which optimizer and loss and in which
    precision the step is counted.

    ``mode='eval'`` counts one forward pass (model.eval(), no_grad); ``mode='train'`` the training
    step of :mod:`dnncost.core.step` -- the one the timer times: forward, loss, backward through the
    real autograd graph, and one optimizer step, in steady state. The user's model is never
    modified: counting works on a copy.
    """
    opts = with_overrides(options or CountOptions(), overrides)
    device, optimizer, loss = opts.device, opts.optimizer, opts.loss
    dtype, autocast, channels_last = opts.dtype, opts.autocast, opts.channels_last
    mode = Mode(mode)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise InputSpecError(f"batch size must be a positive integer, got {batch_size!r}")
    device = resolve_device(device, allow_meta=True)
    if isinstance(model, (str, LoadedModel)):
        loaded = load_model(model) if isinstance(model, str) else model
        name = name or loaded.name
        input_shape = input_shape or loaded.input_shape
        module = loaded.build(device)
    elif isinstance(model, nn.Module):
        module = _to_device_copy(model, device)
    else:
        raise InputSpecError(f"expected an nn.Module, a LoadedModel or a model name, "
                             f"got {type(model).__name__}")
    name = name or type(module).__name__
    cast = parse_dtype(dtype) if dtype is not None else None
    amp = parse_dtype(autocast) if autocast is not None else None
    if amp is not None and device.type == "meta":
        raise InputSpecError("autocast does not act on meta tensors, so its casts cannot be counted "
                             "there; count on real tensors (device 'cpu' or 'cuda')")
    if cast is not None:
        module = module.to(cast)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    shape = tuple(input_shape) if input_shape is not None and inputs is None else None
    with out_of_memory_as_error(batch_size=batch_size, device=device):  # real tensors off meta
        model_inputs = _model_inputs(inputs, shape, batch_size=batch_size, device=device, dtype=cast,
                                     channels_last=channels_last)
    batch = model_inputs.args
    params_dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    dtype_text = str(params_dtype).removeprefix("torch.") + (
        f" + autocast {str(amp).removeprefix('torch.')}" if amp is not None else "")

    root = type(module).__name__
    names = {(f"{root}.{path}" if path else root): (path, type(m).__name__)
             for path, m in module.named_modules()}
    params = list(module.parameters())
    trainable = trainable_parameters(module)
    opt = None
    if mode is Mode.TRAIN and trainable:
        opt = make_optimizer(optimizer, trainable)
        _initialise_optimizer_state(opt, trainable)

    tracker = _OrderedModuleTracker()
    counting = _CountingMode(tracker, names)
    saved = _SavedActivations(module)
    baseline = sum(t.untyped_storage().nbytes() for t in [*params, *module.buffers()])
    state_bytes = _optimizer_state_bytes(opt)

    @contextlib.contextmanager
    def part(p: Part) -> Iterator[None]:
        """Switch phase and attribution as the step moves through its parts."""
        if p is Part.FORWARD:
            with named_model_failure(module, name=name, inputs=model_inputs.tensors()), \
                    (saved.hooks() if mode is Mode.TRAIN else contextlib.nullcontext()), \
                    (torch.autocast(device.type, dtype=amp) if amp is not None
                     else contextlib.nullcontext()):
                yield
        elif p is Part.LOSS:
            counting.outside = LOSS_MODULE
            with saved.hooks():
                yield
        else:
            counting.phase = {Part.BACKWARD: Phase.BACKWARD, Part.OPTIMIZER: Phase.OPTIMIZER}.get(
                p, counting.phase)
            yield

    shapes, hook = _output_shapes(module)
    try:
        with tracker:  # the tracker names the failing module, also in build_step's label forward
            step = build_step(module, batch, kwargs=model_inputs.kwargs, mode=mode, optimizer=opt,
                              loss=loss, part=part)
            with counting, out_of_memory_as_error(batch_size=batch_size, device=device):
                step()
    except (DnncostError, RuntimeError) as exc:
        if device.type != "meta" or not _meta_limitation(exc):
            raise
        raise InputSpecError(f"{exc}; it failed {META_HINT}") from exc
    finally:
        hook.remove()
    grad_bytes = sum(p.numel() * p.element_size() for p in trainable)
    peak = baseline + state_bytes + counting.peak_bytes
    return CostReport(
        model=name, mode=mode,
        input_shape=shape or (tuple(model_inputs.tensors()[0].shape[1:]) if model_inputs.tensors()
                              else ()),
        batch_size=model_inputs.batch_size,
        records=tuple(counting.records),
        params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in trainable),
        param_bytes=sum(p.numel() * p.element_size() for p in params),
        activation_bytes=saved.nbytes,
        peak_bytes=peak,
        unsupported_ops=tuple(sorted(counting.unsupported.items())),
        counted_on=str(device),
        extra={"gradient_bytes": grad_bytes if mode is Mode.TRAIN else 0,
               "optimizer": type(opt).__name__ if opt is not None else None},
        modules=_module_infos(module, shapes), inputs=model_inputs.describe(), dtype=dtype_text,
    )


def _meta_limitation(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause) is the meta device's limit, not the model's own error:
    a value read from a meta tensor (``.item()``, data-dependent control flow) or no meta kernel."""
    text = f"{exc} {exc.__cause__ or ''}".lower()
    return "meta" in text or isinstance(exc.__cause__ or exc, NotImplementedError)


def _initialise_optimizer_state(opt: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> None:
    """Take one untracked step on zero gradients so that the counted step is a steady-state one
    (momentum buffers exist), then restore the parameters' gradients to None."""
    for p in params:
        p.grad = torch.zeros_like(p)
    with torch.no_grad():
        saved = [p.detach().clone() for p in params] if params[0].device.type != "meta" else None
        opt.step()
        if saved is not None:
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    opt.zero_grad(set_to_none=True)


def _optimizer_state_bytes(opt: torch.optim.Optimizer | None) -> int:
    if opt is None:
        return 0
    tensors = [t for state in opt.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)
