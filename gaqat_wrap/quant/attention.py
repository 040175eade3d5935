"""Quantized ``nn.MultiheadAttention``: fake-quantized in- and out-projections that really run.

``nn.MultiheadAttention`` never calls ``out_proj.forward``: it hands
``in_proj_weight`` and ``out_proj.weight`` to ``F.multi_head_attention_forward``
(or a fused kernel). Quantizing ``out_proj`` as a Linear layer would report
it as quantized while it runs in full precision. :func:`quantize_attention`
re-classes the attention module in place (it stays an ``nn.MultiheadAttention``
and keeps its Parameters and state_dict keys) and gives it a forward that:

- fake-quantizes query, key and value with one per-tensor ``input_quantizer``
  (self-attention passes one tensor three times; one step size keeps the
  packed in-projection a single integer matrix product);
- fake-quantizes ``in_proj_weight`` (or ``q/k/v_proj_weight`` when ``kdim`` /
  ``vdim`` differ from ``embed_dim``) per output channel;
- computes the attention as ``nn.MultiheadAttention``'s own slow path does
  (masks, ``is_causal``, ``bias_k``/``bias_v``, ``add_zero_attn``, dropout,
  ``need_weights``, batch-first or not, unbatched inputs);
- calls ``self.out_proj(...)``, so ``out_proj`` is an ordinary layer: quantized
  (weight and input) when ``quantize_model`` quantized it, full precision when it
  was kept or excluded, and ``quant_report`` says which.

The matrix products inside the attention (scores, weighted values) stay in
the model's precision, as for every other layer (see docs/concepts/quantization.md).

Examples:
    >>> import torch
    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
    >>> quantize_attention(mha, weight_bits=4, input_bits=4, role="attn")
    >>> isinstance(mha, nn.MultiheadAttention), type(mha).__name__, mha.in_proj_weight_quantizer.scale.shape
    (True, 'QuantizedMultiheadAttention', torch.Size([24]))
    >>> out, weights = mha(torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8))
    >>> out.shape, weights.shape
    (torch.Size([2, 5, 8]), torch.Size([2, 5, 5]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaqat_wrap.class_swap import mixin_subclass, reduce_by_original_class
from gaqat_wrap.quant.quantizer import LSQQuantizer, ScaleInit

PACKED_WEIGHTS = ("in_proj_weight",)
SEPARATE_WEIGHTS = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def projection_weight_names(module: nn.MultiheadAttention) -> tuple[str, ...]:
    """The in-projection weight Parameters of ``module``: packed, or one per query/key/value.

    Examples:
        >>> projection_weight_names(nn.MultiheadAttention(8, 2)), projection_weight_names(nn.MultiheadAttention(8, 2, kdim=4))
        (('in_proj_weight',), ('q_proj_weight', 'k_proj_weight', 'v_proj_weight'))
    """
    return PACKED_WEIGHTS if module._qkv_same_embed_dim else SEPARATE_WEIGHTS


def attention_skip_reason(module: nn.Module) -> str | None:
    """Why ``module`` (an ``nn.MultiheadAttention``) cannot be quantized, or ``None`` if it can.

    Examples:
        >>> attention_skip_reason(nn.MultiheadAttention(8, 2)) is None
        True
    """
    if isinstance(module, QuantizedAttention):
        return "already quantized"
    cls = type(module)
    if cls.forward is not nn.MultiheadAttention.forward:
        return (f"{cls.__module__}.{cls.__qualname__} overrides MultiheadAttention.forward(); "
                "gaqat_wrap quantizes only the standard forward")
    return None


def _bool_to_additive(mask: Tensor | None, name: str, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = masked out) as an additive float mask; float masks pass through."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not torch.is_floating_point(mask):
        raise TypeError(f"{name} must be a bool or floating-point tensor, got {mask.dtype}")
    return mask


class QuantizedAttention(nn.Module):
    """Mixin placed in front of ``nn.MultiheadAttention`` by :func:`quantize_attention`.

    Examples:
        >>> mha = nn.MultiheadAttention(4, 1)
        >>> quantize_attention(mha, weight_bits=8, input_bits=None, role="attn")
        >>> isinstance(mha, QuantizedAttention), mha.input_quantizer is None
        (True, True)
    """

    _gaqat_original_class: type
    input_quantizer: LSQQuantizer | None

    # the attributes nn.MultiheadAttention defines, for type checkers
    embed_dim: int
    num_heads: int
    head_dim: int
    dropout: float
    batch_first: bool
    add_zero_attn: bool
    bias_k: Tensor | None
    bias_v: Tensor | None
    in_proj_bias: Tensor | None
    out_proj: nn.Linear

    def quantized_projection_weights(self) -> list[Tensor]:
        """The fake-quantized query, key and value projection weights (``[W_q, W_k, W_v]``)."""
        names = projection_weight_names(self)  # type: ignore[arg-type]
        quantized = [getattr(self, f"{name}_quantizer")(getattr(self, name)) for name in names]
        return list(quantized[0].chunk(3)) if len(quantized) == 1 else quantized

    def _quantize_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize each distinct input tensor once (self-attention passes one tensor three times)."""
        if self.input_quantizer is None:
            return query, key, value
        q = self.input_quantizer(query)
        k = q if key is query else self.input_quantizer(key)
        v = k if value is key else (q if value is query else self.input_quantizer(value))
        return q, k, v

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if query.is_nested or key.is_nested or value.is_nested:
            raise NotImplementedError("quantized MultiheadAttention does not take nested tensors; pass padded tensors "
                                      "with key_padding_mask, or exclude this layer from quantize_model")
        if query.dim() not in (2, 3):
            raise ValueError(f"query must be 2-d (unbatched) or 3-d (batched), got shape {tuple(query.shape)}")
        batched = query.dim() == 3
        # Work batch-first: (N, L, E). Batched sequence-first inputs are transposed, unbatched ones get N = 1.
        if batched and not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        elif not batched:
            query, key, value = (t.unsqueeze(0) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        query, key, value = self._quantize_inputs(query, key, value)
        batch, target_len, _ = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        if key.shape[:2] != value.shape[:2] or key.shape[0] != batch:
            raise ValueError(f"key {tuple(key.shape)} and value {tuple(value.shape)} must share batch and sequence "
                             f"dimensions with each other and the batch of query {tuple(query.shape)}")

        key_padding_mask = _bool_to_additive(key_padding_mask, "key_padding_mask", query.dtype)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention does); "
                               "use nn.Transformer.generate_square_subsequent_mask to create it")
        causal_hint = is_causal and key_padding_mask is None and not need_weights
        attn_mask = None if causal_hint else _bool_to_additive(attn_mask, "attn_mask", query.dtype)

        w_q, w_k, w_v = self.quantized_projection_weights()
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)

        source_len = k.shape[1]
        if attn_mask is not None:
            expected = (target_len, source_len) if attn_mask.dim() == 2 else (batch * heads, target_len, source_len)
            if attn_mask.dim() not in (2, 3) or tuple(attn_mask.shape) != expected:
                raise RuntimeError(f"attn_mask has shape {tuple(attn_mask.shape)}; expected {(target_len, source_len)} "
                                   f"or {(batch * heads, target_len, source_len)}")
            attn_mask = attn_mask.reshape(-1, heads, target_len, source_len) if attn_mask.dim() == 3 else attn_mask
        if key_padding_mask is not None and tuple(key_padding_mask.shape) != (batch, source_len):
            raise RuntimeError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; expected {(batch, source_len)}")
        extra_keys = []
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(batch, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(batch, 1, -1)], dim=1)
            extra_keys.append("bias")
        q, k, v = (t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v))  # (N, H, L, D)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(batch, heads, 1, head_dim)], dim=2)
            v = torch.cat([v, v.new_zeros(batch, heads, 1, head_dim)], dim=2)
            extra_keys.append("zero")
        # every appended key position is visible: pad the masks with zeros
        pad = (0, len(extra_keys))
        if attn_mask is not None and extra_keys:
            attn_mask = F.pad(attn_mask, pad)
        if key_padding_mask is not None:
            key_padding_mask = F.pad(key_padding_mask, pad) if extra_keys else key_padding_mask
            padding = key_padding_mask.view(batch, 1, 1, -1)
            attn_mask = padding if attn_mask is None else attn_mask + padding
        dropout = self.dropout if self.training else 0.0

        if need_weights:
            scores = torch.matmul(q * math.sqrt(1.0 / head_dim), k.transpose(-2, -1))
            if attn_mask is not None:
                scores = scores + attn_mask
            weights = torch.softmax(scores, dim=-1)
            if dropout > 0.0:
                weights = F.dropout(weights, p=dropout)
            attended = torch.matmul(weights, v)
        else:
            weights = None
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout, is_causal=causal_hint)
        output = self.out_proj(attended.transpose(1, 2).reshape(batch, target_len, self.embed_dim))

        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return output.squeeze(0), weights.squeeze(0) if weights is not None else None
        return (output if self.batch_first else output.transpose(0, 1)), weights

    def __reduce_ex__(self, protocol: int) -> tuple:
        # Pickle by the original class: the dynamic subclass is rebuilt on load, even in a fresh process.
        return reduce_by_original_class(self, super().__reduce_ex__(protocol), quantized_attention_class)


_CLASS_CACHE: dict[type, type] = {}


def quantized_attention_class(cls: type) -> type:
    """The (cached) quantized subclass of an ``nn.MultiheadAttention`` class.

    Examples:
        >>> quantized_attention_class(nn.MultiheadAttention).__name__
        'QuantizedMultiheadAttention'
    """
    return mixin_subclass(QuantizedAttention, cls, "Quantized", __name__, _CLASS_CACHE)


def quantize_attention(
    module: nn.MultiheadAttention,
    *,
    weight_bits: int,
    input_bits: int | None,
    role: str,
    input_signed: bool | None = None,
    weight_init: ScaleInit = "lsq",
    input_init: ScaleInit = "lsq",
) -> None:
    """Turn an ``nn.MultiheadAttention`` into its quantized class in place (``out_proj`` is left as it is).

    Adds ``<weight>_quantizer`` (per output channel) for each in-projection
    weight and one per-tensor ``input_quantizer`` (``None`` when
    ``input_bits`` is ``None``). Quantize ``out_proj`` as a Linear layer
    separately (:func:`gaqat_wrap.quantize_model` does both). Raises
    ``TypeError`` with the reason when the module cannot be quantized.

    Examples:
        >>> mha = nn.MultiheadAttention(6, 2, kdim=4, vdim=5)
        >>> quantize_attention(mha, weight_bits=4, input_bits=8, role="cross")
        >>> [mha.k_proj_weight_quantizer.role, mha.input_quantizer.role]
        ['cross.k_proj_weight', 'cross.input']
    """
    if not isinstance(module, nn.MultiheadAttention):
        raise TypeError(f"quantize_attention expects an nn.MultiheadAttention, got {type(module).__name__}")
    reason = attention_skip_reason(module)
    if reason is not None:
        raise TypeError(f"cannot quantize {role or type(module).__name__}: {reason}")
    device = module.out_proj.weight.device
    quantizers = {}
    for name in projection_weight_names(module):
        weight = getattr(module, name)
        quantizer = LSQQuantizer(weight_bits, kind="weight", num_channels=weight.shape[0], init=weight_init,
                                 role=f"{role}.{name}").to(device=device)
        quantizer.initialize_from_weight(weight)
        quantizers[f"{name}_quantizer"] = quantizer
    input_quantizer = None
    if input_bits is not None:
        input_quantizer = LSQQuantizer(input_bits, kind="input", signed=input_signed, init=input_init,
                                       role=f"{role}.input").to(device=device)
    original = type(module)
    module.__class__ = quantized_attention_class(original)
    module._gaqat_original_class = original
    for attr, quantizer in quantizers.items():
        setattr(module, attr, quantizer)
    module.input_quantizer = input_quantizer


_SAVED_NESTED_FLAG = "_gaqat_use_nested_tensor"


def _run_unfused(module: nn.Module, args: tuple) -> None:
    """A forward pre-hook that changes nothing: torch skips its fused encoder-layer kernel when a hook is attached."""
    return None


def keep_transformer_layers_unfused(model: nn.Module, quantized: list[nn.Module]) -> int:
    """Turn off torch's fused Transformer-encoder paths where they would bypass quantized layers.

    In eval mode without gradients, ``nn.TransformerEncoderLayer`` calls a fused
    kernel with the raw ``in_proj_weight``, ``out_proj.weight``, ``linear1.weight``
    and ``linear2.weight``, and ``nn.TransformerEncoder`` turns padded batches
    into nested tensors: the quantized layers inside would not run. Each encoder
    layer that holds a quantized module gets a forward pre-hook that does
    nothing (torch takes the unfused path when a hook is attached), and each
    such encoder gets ``use_nested_tensor = False``. Returns how many encoder
    layers got the hook; :func:`restore_transformer_fast_paths` undoes both.

    Examples:
        >>> layer = nn.TransformerEncoderLayer(8, 2, batch_first=True)
        >>> keep_transformer_layers_unfused(layer, [layer.linear1])
        1
    """
    ids = {id(m) for m in quantized}
    changed = 0
    for module in model.modules():
        if not isinstance(module, nn.TransformerEncoderLayer | nn.TransformerEncoder):
            continue
        if not any(id(m) in ids for m in module.modules()):
            continue
        if isinstance(module, nn.TransformerEncoder):
            if _SAVED_NESTED_FLAG not in module.__dict__:
                module.__dict__[_SAVED_NESTED_FLAG] = getattr(module, "use_nested_tensor", False)
            module.use_nested_tensor = False
        elif _run_unfused not in module._forward_pre_hooks.values():
            module.register_forward_pre_hook(_run_unfused)
            changed += 1
    return changed


def restore_transformer_fast_paths(model: nn.Module) -> None:
    """Undo :func:`keep_transformer_layers_unfused` (used by :func:`gaqat_wrap.quant.unquantize_model`).

    Examples:
        >>> layer = nn.TransformerEncoderLayer(8, 2, batch_first=True)
        >>> _ = keep_transformer_layers_unfused(layer, [layer.linear1])
        >>> restore_transformer_fast_paths(layer)
        >>> len(layer._forward_pre_hooks)
        0
    """
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is _run_unfused:
                del module._forward_pre_hooks[key]
        if _SAVED_NESTED_FLAG in module.__dict__:
            module.use_nested_tensor = module.__dict__.pop(_SAVED_NESTED_FLAG)
