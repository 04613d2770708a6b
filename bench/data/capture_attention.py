"""The capturing attention function: Q, K, V exactly as a ``transformers`` model passes them to attention.

``transformers`` models call their attention through ``ALL_ATTENTION_FUNCTIONS`` with
``(module, query [B, H, T, D], key [B, Hk, T, D], value [B, Hk, T, Dv], attention_mask, scaling=...)``:
the query and key after rotary embeddings and any per-head normalisation, before the score, and key and
value heads not yet repeated for grouped-query attention. :class:`Recorder` is registered there under
:data:`NAME` (and its mask function beside it); it records what it is passed, checks that the mask the
model built is what the external format can express (padding at the end, causal or bidirectional, no
bias), then calls the model's ``sdpa`` (or, for a model without it, its own eager) implementation, so
the forward pass is the model's own.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from bench.errors import DataError

NAME = "sparsebench_capture"


@dataclass
class Call:
    """One attention call: ``q`` ``[B, H, T, D]``, ``k`` ``[B, Hk, T, D]``, ``v`` ``[B, Hk, T, Dv]``
    (``None`` when the layer is not kept), the softmax ``scale`` and whether attention is ``causal``."""

    layer: int
    q: torch.Tensor | None
    k: torch.Tensor | None
    v: torch.Tensor | None
    heads: int
    kv_heads: int
    head_dim: int
    value_dim: int
    scale: float
    causal: bool


def expected_pattern(lengths: torch.Tensor, t: int, causal: bool) -> torch.Tensor:
    """Bool ``[B, T, T]``: key ``j`` visible to query ``i`` of sample ``b`` as the external format says,
    ``j < lengths[b]`` and, when ``causal``, ``j <= i``."""
    j = torch.arange(t)
    allowed = (j[None, None, :] < lengths[:, None, None]).expand(len(lengths), t, t)
    return allowed & (j[None, :] <= j[:, None])[None] if causal else allowed


def _allowed(mask: torch.Tensor, layer: int) -> torch.Tensor:
    """Bool ``[B, Tq, Tk]`` of the pairs a boolean or additive ``mask`` ``[B|1, H|1, Tq, Tk]`` lets through."""
    if mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask == 0
        blocked = mask <= torch.finfo(mask.dtype).min / 2
        if not bool((allowed | blocked).all()):
            raise DataError(f"layer {layer}: the model adds a bias to its attention scores (ALiBi or relative "
                            "positions?); the external format records q k^T * scale only")
    if allowed.shape[1] > 1 and not bool((allowed == allowed[:, :1]).all()):
        raise DataError(f"layer {layer}: the attention mask differs between heads; the format has one per sample")
    return allowed[:, 0]


def check_mask(layer: int, mask, lengths: torch.Tensor, t: int, causal: bool, unmasked_causal: bool,
               window=None) -> None:
    """Raise :class:`DataError` unless the model's ``mask`` admits exactly the pairs the format records on
    every valid query row (``unmasked_causal``: whether the inner implementation is causal without a mask)."""
    if mask is None:
        if int(lengths.min()) < t:
            raise DataError(f"layer {layer}: the model passed no attention mask for a padded batch "
                            "(it would attend to padding)")
        if unmasked_causal != causal:
            raise DataError(f"layer {layer}: the layer says {'causal' if causal else 'bidirectional'} but its "
                            "attention without a mask is not")
        return
    allowed = _allowed(mask.detach().to("cpu"), layer).expand(len(lengths), t, t)
    rows = torch.arange(t)[None, :, None] < lengths[:, None, None]
    wrong = (allowed != expected_pattern(lengths, t, causal)) & rows
    if bool(wrong.any()):
        b, i, j = (int(x) for x in wrong.nonzero()[0])
        hint = f" (a sliding window of {window} keys: use --length {window} or less)" if window else ""
        kind = "causal" if causal else "bidirectional"
        raise DataError(f"layer {layer}: the model's attention mask is not the {kind} pattern over valid tokens "
                        f"that the external format records (sample {b}, query {i}, key {j})" + hint)


def inner_attention(model):
    """``(attention function, mask function name, whether it follows the causal flag without a mask)``: the
    model's ``sdpa`` when it supports it (causal without a mask when the layer says so), else the eager
    function of its own modeling module (bidirectional without a mask)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if getattr(model, "_supports_sdpa", False):
        return ALL_ATTENTION_FUNCTIONS["sdpa"], "sdpa", True
    eager = getattr(sys.modules.get(type(model).__module__), "eager_attention_forward", None)
    if eager is None:
        # Raised only when attention is called: a model with no attention layers is told so by the probe.
        def eager(*args, **kwargs):
            raise DataError(f"{type(model).__name__} supports neither sdpa nor a module-level eager attention "
                            "that capture can call")
    return eager, "eager", False


class Recorder:
    """The attention function registered as :data:`NAME`; records the calls of one forward pass.

    Before a forward pass call :meth:`start` with the batch's ``lengths`` ``[B]``, the layers to keep
    (``None``: all) and the layers to check (``None``: those kept); afterwards :attr:`calls` holds one
    :class:`Call` per attention call, in call order (the layer index is the call's position), and
    :attr:`count` how many calls there were. Only checked layers must be expressible in the format (a
    model may mix sliding-window and global layers; selecting the global ones is fine).
    """

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype
        self.inner, self.follows_flag = None, True
        self.start(torch.zeros(0, dtype=torch.int64), None)

    def start(self, lengths: torch.Tensor, keep, check="kept") -> None:
        self.lengths, self.keep, self.calls, self.count = lengths, keep, [], 0
        self.check = keep if check == "kept" else check

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        layer = self.count
        self.count += 1
        self.calls.append(self._record(layer, module, query, key, value, attention_mask, kwargs))
        return self.inner(module, query, key, value, attention_mask, **kwargs)

    def _record(self, layer, module, query, key, value, mask, kwargs) -> Call:
        b, h, t, d = query.shape
        scale = kwargs.get("scaling")
        scale = getattr(module, "scaling", None) if scale is None else scale
        scale = d ** -0.5 if scale is None else float(scale)
        causal = kwargs.get("is_causal")
        # sdpa's own rule (transformers.integrations.sdpa_attention): the module's flag, causal if unset.
        causal = bool(getattr(module, "is_causal", True) if causal is None else causal)
        if self.check is None or layer in self.check:
            self._check(layer, module, key, mask, kwargs, t, causal)
        kept = self.keep is None or layer in self.keep
        store = (lambda x: x.detach().to("cpu", self.dtype)) if kept else (lambda x: None)
        return Call(layer=layer, q=store(query), k=store(key), v=store(value), heads=h, kv_heads=key.shape[1],
                    head_dim=d, value_dim=value.shape[-1], scale=scale, causal=causal)

    def _check(self, layer, module, key, mask, kwargs, t, causal) -> None:
        """Raise :class:`DataError` for what the external format cannot express."""
        if key.shape[2] != t:
            raise DataError(f"layer {layer}: keys of length {key.shape[2]} for queries of length {t} "
                            "(cross-attention or a cache); capture takes self-attention only")
        for name in ("softcap", "position_bias"):
            if kwargs.get(name) is not None:
                raise DataError(f"layer {layer}: the model's attention uses {name}; the external format "
                                "records q k^T * scale only")
        if mask is not None and mask.ndim != 4:
            raise DataError(f"layer {layer}: an attention mask of shape {tuple(mask.shape)}; expected "
                            "[B, H or 1, T, T]")
        window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None)
        check_mask(layer, mask, self.lengths, t, causal, causal and self.follows_flag, window)


def install(recorder: Recorder) -> None:
    """Register ``recorder`` as attention implementation :data:`NAME` (before loading the model)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, recorder)


def attach(recorder: Recorder, model) -> None:
    """Point ``recorder`` at the model's own attention and register the matching mask function."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    recorder.inner, mask_name, recorder.follows_flag = inner_attention(model)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS[mask_name])
