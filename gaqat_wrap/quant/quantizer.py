"""The LSQ quantizer module: one learnable step size per tensor or per channel."""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gaqat_wrap.quant.lsq import (
    FakeQuantArgs,
    lsq_fake_quant,
    lsq_grad_scale,
    lsq_init_scale,
    mse_init_scale,
    quant_range,
    validate_bits,
)

logger = logging.getLogger(__name__)

ScaleInit = Literal["lsq", "mse"]

_SAMPLE_LIMIT = 1 << 16


def step_sizes(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every LSQ step-size Parameter of ``model`` by its role, in module order.

    A role is ``"<layer>.weight"`` or ``"<layer>.input"``, named after the layer's path when
    :func:`gaqat_wrap.quantize_model` quantized it (so it stays the same inside a DDP or
    peft wrapper). This is how :class:`gaqat_wrap.GAQATOptimizer` (``model=``),
    :func:`gaqat_wrap.param_groups` and the peft helpers find the step sizes.

    Examples:
        >>> layer = torch.nn.Sequential(LSQQuantizer(4, kind="weight", num_channels=2, role="fc.weight"))
        >>> list(step_sizes(layer)), step_sizes(layer)["fc.weight"].shape
        (['fc.weight'], torch.Size([2]))
    """
    found: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, LSQQuantizer):
            role = module.role if module.role not in found else f"{name}.scale"
            found[role] = module.scale
    return found


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class LSQQuantizer(nn.Module):
    """Learned-step-size fake quantizer.

    ``kind="weight"``: signed, one step size per output channel (dim 0),
    initialised from the weight. ``kind="input"``: one step size for the whole
    tensor; signed or unsigned (``signed=None`` decides from data: signed if
    the calibration data has negatives), initialised from data by
    :func:`gaqat_wrap.calibrate` or at the first forward.

    The step size is a Parameter from construction (an optimizer built later
    sees it); only its value is set at initialisation. The LSQ gradient scale
    uses ``N`` = elements per step size: the fan-in for per-channel weights,
    the elements of one sample (``numel / batch``) for inputs. ``role`` names the
    step size in reports and optimizer checkpoints (see :func:`step_sizes`).

    Examples:
        >>> q = LSQQuantizer(4, kind="input")
        >>> y = q(torch.randn(2, 8))   # first forward initialises the step size
        >>> bool(q.initialized), q.is_signed
        (True, True)
    """

    def __init__(
        self,
        bits: int,
        *,
        kind: Literal["weight", "input"],
        num_channels: int | None = None,
        signed: bool | None = None,
        init: ScaleInit = "lsq",
        role: str = "",
    ) -> None:
        super().__init__()
        self.bits = validate_bits(bits)
        if kind not in ("weight", "input"):
            raise ValueError(f"kind must be 'weight' or 'input', got {kind!r}")
        if init not in ("lsq", "mse"):
            raise ValueError(f"init must be 'lsq' or 'mse', got {init!r}")
        if kind == "weight":
            if num_channels is None or num_channels < 1:
                raise ValueError("a weight quantizer needs num_channels >= 1 (one step size per output channel)")
            signed = True if signed is None else signed
        self.kind = kind
        self.init = init
        # an input step size is one number kept as a 1-element vector: FSDP (v1 and v2) refuses 0-d parameters
        self.scale = nn.Parameter(torch.ones(num_channels if kind == "weight" else 1))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("signed", torch.tensor(bool(signed) if signed is not None else False))
        self._auto_sign = signed is None
        self._initialized = False
        self._signed = bool(signed) if signed is not None else False
        self._calibrating = False
        self._stats: dict[str, Tensor] | None = None
        self.role = role or f"<{kind}>"
        self.register_load_state_dict_post_hook(_refresh_cached_flags)
        self._register_load_state_dict_pre_hook(_accept_scalar_input_scale)

    def sync_from_buffers(self) -> None:
        """Re-read the Python mirrors of the ``initialized`` / ``signed`` buffers (after loading or restoring them).

        Examples:
            >>> q = LSQQuantizer(4, kind="input")
            >>> _ = q.initialized.fill_(True); q.sync_from_buffers(); q.is_initialized
            True
        """
        self._initialized = bool(self.initialized.item())
        self._signed = bool(self.signed.item())

    # -- ranges ---------------------------------------------------------------
    @property
    def is_signed(self) -> bool:
        return self._signed

    @property
    def is_initialized(self) -> bool:
        return self._initialized

    @property
    def qrange(self) -> tuple[int, int]:
        """``(Qn, Qp)`` of this quantizer."""
        return quant_range(self.bits, self._signed)

    def extra_repr(self) -> str:
        sign = "auto" if self._auto_sign and not self._initialized else ("signed" if self._signed else "unsigned")
        gran = f"per-channel({self.scale.numel()})" if self.kind == "weight" else "per-tensor"
        return f"bits={self.bits}, kind={self.kind}, {sign}, {gran}, initialized={self._initialized}"

    # -- initialisation ---------------------------------------------------------
    @torch.no_grad()
    def initialize_from(self, x: Tensor) -> None:
        """Set the step size (and, for auto-signed inputs, the sign) from ``x``."""
        self.begin_calibration()
        self._observe(x)
        self.end_calibration()

    def begin_calibration(self) -> None:
        """Start collecting statistics; forwards pass data through unquantized."""
        self._calibrating = True
        self._stats = None

    def abort_calibration(self) -> None:
        """Drop collected statistics and leave calibration mode; the step size stays as it was."""
        self._calibrating = False
        self._stats = None

    @torch.no_grad()
    def _observe(self, x: Tensor) -> None:
        x = x.detach().float()
        flat = x.reshape(-1)
        stats = {
            "sum_abs": flat.abs().sum().double().reshape(1),
            "count": torch.tensor([flat.numel()], dtype=torch.float64, device=x.device),
            "min": flat.min().reshape(1),
        }
        if self.init == "mse":
            if flat.numel() > _SAMPLE_LIMIT:
                idx = torch.randint(flat.numel(), (_SAMPLE_LIMIT,), device=x.device)
                flat = flat[idx]
            stats["sample"] = flat
        if self._stats is None:
            self._stats = stats
        else:
            self._stats["sum_abs"] += stats["sum_abs"]
            self._stats["count"] += stats["count"]
            self._stats["min"] = torch.minimum(self._stats["min"], stats["min"])
            if "sample" in stats:
                merged = torch.cat([self._stats["sample"], stats["sample"]])
                self._stats["sample"] = merged[-4 * _SAMPLE_LIMIT :]

    @torch.no_grad()
    def end_calibration(self) -> None:
        """Turn collected statistics into the step size (all-reduced under DDP)."""
        self._calibrating = False
        stats, self._stats = self._stats, None
        if stats is None:
            if not _distributed():
                return
            # Every rank must join the same collectives, even one that saw no data.
            device = self.scale.device
            stats = {
                "sum_abs": torch.zeros(1, dtype=torch.float64, device=device),
                "count": torch.zeros(1, dtype=torch.float64, device=device),
                "min": torch.full((1,), float("inf"), device=device),
            }
        if _distributed():
            dist.all_reduce(stats["sum_abs"], op=dist.ReduceOp.SUM)
            dist.all_reduce(stats["count"], op=dist.ReduceOp.SUM)
            dist.all_reduce(stats["min"], op=dist.ReduceOp.MIN)
        if self._auto_sign:
            self._signed = bool(stats["min"].item() < 0)
        if stats["count"].item() == 0:
            return
        qn, qp = self.qrange
        if self.init == "mse":
            has_sample = "sample" in stats
            value = mse_init_scale(stats["sample"], qn, qp) if has_sample else torch.zeros((), device=self.scale.device)
            if _distributed():
                # Ranks saw different samples: average their searches so all agree.
                votes = torch.stack([value.float() * has_sample, torch.tensor(float(has_sample), device=value.device)])
                dist.all_reduce(votes, op=dist.ReduceOp.SUM)
                value = votes[0] / votes[1]
        else:
            mean_abs = (stats["sum_abs"] / stats["count"].clamp(min=1)).float()
            value = (2 * mean_abs / qp**0.5).clamp(min=1e-8).reshape(())
        self._set_scale(value)

    @torch.no_grad()
    def initialize_from_weight(self, weight: Tensor) -> None:
        """Per-channel step sizes from a weight tensor (dim 0 = output channel)."""
        qn, qp = self.qrange
        if self.init == "mse":
            value = mse_init_scale(weight, qn, qp, dim=0)
        else:
            value = lsq_init_scale(weight, qp, dim=0)
        self._set_scale(value)

    def _set_scale(self, value: Tensor) -> None:
        self.scale.data.copy_(value.reshape(self.scale.shape).to(self.scale))
        self.signed.fill_(self._signed)
        self.initialized.fill_(True)
        self._initialized = True

    # -- forward --------------------------------------------------------------
    def fake_quant_args(self, x: Tensor) -> FakeQuantArgs:
        """What fake-quantizing ``x`` takes: the step size viewed to broadcast, ``Qn``, ``Qp`` and the LSQ ``g``.

        Initialises the step size from ``x`` first if it is not yet set.
        :meth:`forward` is ``lsq_fake_quant(x, *self.fake_quant_args(x))``; the fused layers
        (:mod:`gaqat_wrap.quant.fused`) use the same arguments.

        Examples:
            >>> q = LSQQuantizer(4, kind="weight", num_channels=3)
            >>> args = q.fake_quant_args(torch.randn(3, 5))
            >>> args.scale.shape, args.qn, args.qp, round(args.grad_scale, 4)
            (torch.Size([3, 1]), -8, 7, 0.169)
        """
        if not self._initialized:
            if self.kind == "weight":
                self.initialize_from_weight(x)
            else:
                logger.debug("initialising input step size of %s from its first batch", self.role)
                self.initialize_from(x)
        qn, qp = self.qrange
        if self.kind == "weight":
            scale = self.scale.view((-1,) + (1,) * (x.dim() - 1))
            per_scale = x[0].numel()
        else:
            scale = self.scale.view(())
            per_scale = x[0].numel() if x.dim() > 1 else x.numel()
        return FakeQuantArgs(scale, qn, qp, lsq_grad_scale(per_scale, qp))

    @property
    def calibrating(self) -> bool:
        """True between :meth:`begin_calibration` and :meth:`end_calibration`: forwards pass data through."""
        return self._calibrating

    def forward(self, x: Tensor) -> Tensor:
        if self._calibrating:
            self._observe(x)
            return x
        return lsq_fake_quant(x, *self.fake_quant_args(x))


def _accept_scalar_input_scale(state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before input step sizes became 1-element vectors hold them as 0-d tensors."""
    key = prefix + "scale"
    if key in state_dict and state_dict[key].dim() == 0:
        state_dict[key] = state_dict[key].reshape(1)


def _refresh_cached_flags(module: nn.Module, incompatible_keys: object = None) -> None:
    if isinstance(module, LSQQuantizer):
        module.sync_from_buffers()
