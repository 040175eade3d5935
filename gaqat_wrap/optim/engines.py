"""Which distributed engines GAQATOptimizer supports, and a clear error for the others.

Supported: a single process, and data parallelism where every rank holds full
parameters and gradients (``DistributedDataParallel``, ``accelerate launch
--multi_gpu``). Not supported: FSDP (flattened ``FlatParameter`` shards or
``DTensor`` shards from ``fully_shard``) and DeepSpeed ZeRO: the SAM
perturbation needs the global gradient norm and the conflict statistics need
whole step-size gradients, which sharded engines do not hold.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

SUPPORTED_ENGINES = "a single process or DistributedDataParallel (accelerate launch --multi_gpu, torchrun + DDP)"


def _is_sharded(param: Tensor) -> str | None:
    try:
        from torch.distributed.fsdp._flat_param import FlatParameter
    except ImportError:  # pragma: no cover - torch built without distributed
        FlatParameter = ()
    if FlatParameter and isinstance(param, FlatParameter):
        return "FSDP (FlatParameter)"
    if type(param).__name__ == "DTensor" or "DTensor" in {c.__name__ for c in type(param).__mro__}:
        return "FSDP2 / tensor parallel (DTensor)"
    if hasattr(param, "ds_id") or hasattr(param, "ds_numel"):
        return "DeepSpeed ZeRO"
    return None


def check_supported_parameters(params: Iterable[Tensor]) -> None:
    """Raise ``NotImplementedError`` naming the supported engines if a parameter is sharded.

    Examples:
        >>> import torch
        >>> check_supported_parameters([torch.nn.Parameter(torch.ones(2))])
    """
    for param in params:
        engine = _is_sharded(param)
        if engine is not None:
            raise NotImplementedError(
                f"GAQATOptimizer does not support {engine}: the SAM perturbation needs the global gradient norm and the "
                f"scale-conflict statistics need whole step-size gradients. Supported: {SUPPORTED_ENGINES}."
            )
