"""FSDP2 through Accelerate for the Trainer (``train.fsdp``): the trained modules' weights, gradients and
optimizer state are sharded over the processes (``torch.distributed.fsdp.fully_shard``, applied by
Accelerate's ``prepare``) instead of replicated as under DDP. The teacher is never sharded: it is not part of
the trained module.

What the Trainer adds around Accelerate:

* **CPU processes.** Accelerate (1.16 here) turns FSDP on only for accelerator devices and silently runs DDP under
  ``Accelerator(cpu=True)``; PyTorch's FSDP2 itself works over gloo, so on CPU the Trainer sets Accelerate's
  distributed type to FSDP itself (this is what the 2-process CPU tests exercise).
* **Whole weights in every checkpoint.** A sharded module's state is DTensor shards. Each checkpoint gathers
  them on every process (a collective) into a plain copy of the trained module kept in host memory, which
  the main process then writes exactly as without FSDP; the optimizer state is gathered the same way. A
  checkpoint of an FSDP run therefore resumes with or without FSDP, at any number of processes.
* **A plain model after training.** At the end of ``fit`` the gathered copy takes the sharded modules' place
  (the same Python objects, which the objective and the runner hold), so evaluation and export see an
  ordinary ``nn.Module``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import DistributedType
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from distill.train.settings import FsdpSettings


def _has_forward(module: nn.Module) -> bool:
    return type(module).forward is not nn.Module.forward  # ModuleDict, ModuleList: containers FSDP refuses


def wrap_classes(settings: FsdpSettings, model: nn.Module) -> list[str]:
    """The class names sharded as units: ``wrap`` checked against the model; else its ``_no_split_modules``
    (a transformer's layers); else every class with a module of at least ``min_params`` parameters."""
    present = {type(module).__name__ for module in model.modules() if _has_forward(module)}
    if settings.wrap is not None:
        unknown = [name for name in settings.wrap if name not in present]
        if unknown:
            raise ValueError(
                f"train.fsdp.wrap names {unknown}, which the trained model does not contain as modules with a "
                f"forward; its module classes are {sorted(present)}"
            )
        return list(settings.wrap)
    declared = {name for module in model.modules() for name in getattr(module, "_no_split_modules", None) or []}
    if declared & present:
        return sorted(declared & present)
    return sorted(
        {
            type(module).__name__
            for module in model.modules()
            if _has_forward(module) and sum(p.numel() for p in module.parameters()) >= settings.min_params
        }
    )


def fsdp_plugin(settings: FsdpSettings, model: nn.Module) -> FullyShardedDataParallelPlugin:
    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=wrap_classes(settings, model),
        reshard_after_forward=settings.reshard_after_forward,
        cpu_offload=settings.cpu_offload,
        state_dict_type="FULL_STATE_DICT",
    )


def enable_on_cpu(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """Accelerate leaves CPU processes on DDP even with an FSDP plugin; FSDP2 runs over gloo, so use it
    (one process alone has nothing to shard: it trains plainly)."""
    if accelerator.distributed_type == DistributedType.MULTI_CPU and accelerator.num_processes > 1:
        if accelerator.mixed_precision != "no":
            plugin.set_mixed_precision(accelerator.mixed_precision)
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin


def sharded_units(model: nn.Module) -> list[str]:
    """The names of the modules FSDP made units of ("" is the whole trained module)."""
    from torch.distributed.fsdp import FSDPModule

    return [name for name, module in model.named_modules() if isinstance(module, FSDPModule)]


def parameter_bytes(model: nn.Module) -> dict[str, int]:
    """The trained parameters' bytes: whole, and held by this process (its shards). AdamW's state and the
    gradients are sharded the same way, so they shrink by the same ratio."""
    whole = held = 0
    for parameter in model.parameters():
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        whole += parameter.numel() * parameter.element_size()
        held += local.numel() * local.element_size()
    return {"parameter_bytes": whole, "parameter_bytes_this_process": held}


def fsdp_record(model: nn.Module, processes: int, step: int) -> dict[str, Any]:
    """The ``fsdp`` line of metrics.jsonl: the units and the parameter bytes each process holds."""
    return {"event": "fsdp", "step": step, "processes": processes, "units": sharded_units(model)} | parameter_bytes(
        model
    )


def _whole(value: Any) -> Any:
    """A DTensor gathered to a plain tensor (a collective: every process calls it in the same order)."""
    if isinstance(value, DTensor):
        return value.full_tensor()
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value


class HostCopy:
    """A plain copy of the trained module, made before Accelerate shards it, that holds its whole weights."""

    def __init__(self, model: nn.Module) -> None:
        self.plain = copy.deepcopy(model)

    def gathered(self, model: nn.Module) -> nn.Module:
        """The copy with ``model``'s current weights (every process calls this at the same point)."""
        self.plain.load_state_dict(_whole(model.state_dict()))
        return self.plain

    def replace(self, model: nn.Module) -> None:
        """Turn every module of the sharded ``model`` into its plain twin with the final weights, in place:
        fully_shard keeps the module tree, so the two trees pair up module by module."""
        self.gathered(model)
        for sharded, plain in zip(list(model.modules()), list(self.plain.modules()), strict=True):
            sharded.__class__ = plain.__class__
            sharded.__dict__ = plain.__dict__  # the same parameters, buffers, children and hooks


def host_copy(objective: Any, accelerator: Accelerator, model: nn.Module, description: str) -> HostCopy | None:
    """Under FSDP, the plain copy that checkpoints gather into (None otherwise); refused for objectives that
    change the weights between steps themselves (pruning masks, sparse training): they would see shards."""
    if accelerator.distributed_type != DistributedType.FSDP:
        return None
    hooks = [name for name in ("after_step", "before_optimizer_step") if hasattr(objective, name)]
    if hooks:
        raise ValueError(
            f"{description}: train.fsdp cannot shard this objective: it edits the weights between steps "
            f"({', '.join(hooks)}), which under FSDP hold only a shard; train it without train.fsdp (DDP)"
        )
    return HostCopy(model)


def whole_optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state_dict with every sharded tensor gathered: the same layout as without FSDP."""
    return _whole(optimizer.state_dict())


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole (unsharded) optimizer state into the optimizer of sharded parameters: each tensor shaped
    like its parameter is cut into that parameter's shard."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if not isinstance(parameter, DTensor):
                continue
            slots = optimizer.state.get(parameter, {})
            for name, value in slots.items():
                if torch.is_tensor(value) and not isinstance(value, DTensor) and value.shape == parameter.shape:
                    slots[name] = distribute_tensor(
                        value.to(parameter.device), parameter.device_mesh, parameter.placements
                    )
