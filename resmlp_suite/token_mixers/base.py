"""The token-mixer interface: what every ResMLP token-mixing sublayer provides.

A mixer maps ``(B, T, C)`` to ``(B, T, C)`` with linear maps over the token axis, through a
``max_tokens x max_tokens`` matrix (or one per head) of which a sequence of ``T`` tokens uses the
top-left ``T x T`` block. A subclass holds that matrix (a square ``weight`` by default; otherwise
it says how to read it: :meth:`mixing_matrix`, :meth:`mixing_row`, :meth:`reset_parameters`);
padding masks, causality, heads and incremental decoding are implemented here once for all of them.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import nn
from timm.layers import trunc_normal_

# Initialisations of the mixing weights; the biases start at zero under every scheme.
#   trunc_normal: truncated normal, std 0.02 (the official ResMLP init)
#   average:      each row the uniform average of the tokens it may see (1/(t+1) on causal rows: a
#                 running average; 1/max_tokens otherwise)
#   identity:     the identity plus truncated-normal noise of std 0.02 (each token starts as itself)
INIT_SCHEMES = ("trunc_normal", "average", "identity")
INIT_STD = 0.02

MixerState = dict[str, Any]


class TokenMixer(nn.Module):
    """Base class of the token mixers; see the module docstring. ``heads`` > 1 splits the channels
    into ``heads`` groups, each mixed by its own matrix (``mixing_matrix`` is then ``(heads, T, T)``)."""

    heads: int = 1

    def __init__(self, max_tokens: int, causal: bool = False, init: str = "trunc_normal") -> None:
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        if init not in INIT_SCHEMES:
            raise ValueError(f"unknown token-mixing init {init!r}; expected one of {INIT_SCHEMES}")
        self.max_tokens = max_tokens
        self.causal = causal
        self.init = init

    # --- what a subclass defines: its parameters, and these where they are not a square ``weight``
    # ``[(heads,) max_tokens, max_tokens]`` with a ``bias`` ``[(heads,) max_tokens]`` (or None) -----
    def mixing_matrix(self, num_tokens: int) -> torch.Tensor:
        """The ``T x T`` matrix applied (``(heads, T, T)`` with heads), lower-triangular if causal."""
        self.check_length(num_tokens)
        weight = self.weight[..., :num_tokens, :num_tokens]
        return weight.tril() if self.causal else weight

    def mixing_row(self, position: int) -> torch.Tensor:
        """Row ``position`` of the causal matrix over positions ``0..position`` (``(heads, t+1)`` with heads)."""
        if type(self).mixing_matrix is TokenMixer.mixing_matrix:  # a square weight: read the row, build nothing
            return self.weight[..., position, : position + 1]
        return self.mixing_matrix(position + 1)[..., position, :]

    def token_bias(self, num_tokens: int) -> Optional[torch.Tensor]:
        """The per-position bias ``(T,)`` (``(heads, T)`` with heads), or None."""
        bias = getattr(self, "bias", None)
        return None if bias is None else bias[..., :num_tokens]

    def reset_parameters(self) -> None:
        """``weight`` by ``self.init`` (see :data:`INIT_SCHEMES`), ``bias`` zero."""
        self.init_square_(self.weight)
        if getattr(self, "bias", None) is not None:
            nn.init.zeros_(self.bias)

    # --- shared helpers for subclasses -------------------------------------------------------
    def init_square_(self, weight: torch.Tensor) -> None:
        """Initialise ``[..., N, N]`` dense weights by ``self.init``."""
        with torch.no_grad():
            n = weight.shape[-1]
            if self.init == "average":
                rows = torch.arange(n, dtype=weight.dtype)
                value = (1.0 / (rows + 1))[:, None].expand(n, n).tril() if self.causal else torch.full((n, n), 1.0 / n)
                weight.copy_(value.expand_as(weight))
                return
            trunc_normal_(weight, std=INIT_STD)
            if self.init == "identity":
                weight.add_(torch.eye(n, dtype=weight.dtype))

    def check_length(self, num_tokens: int) -> None:
        if num_tokens > self.max_tokens:
            raise ValueError(
                f"{type(self).__name__} holds a {self.max_tokens}x{self.max_tokens} token-mixing matrix, "
                f"so it takes at most {self.max_tokens} tokens; got a sequence of {num_tokens}"
            )

    # --- full-sequence forward ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} expects (batch, tokens, channels), got shape {tuple(x.shape)}")
        num_tokens = x.shape[1]
        self.check_length(num_tokens)
        if key_padding_mask is not None:
            if key_padding_mask.shape != x.shape[:2]:
                raise ValueError(
                    f"key_padding_mask must have shape (batch, tokens) = {tuple(x.shape[:2])}, "
                    f"got {tuple(key_padding_mask.shape)}"
                )
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        out = self._mix(x, num_tokens)
        if not self.causal or torch.isfinite(out.detach().sum(dtype=torch.float32)):
            return out
        # The upper triangle is zero, but 0 * inf = NaN: a non-finite input at position j (an fp16
        # overflow) has reached every position before j. Mix the finite values instead, and mark
        # non-finite (NaN) each output whose own past holds a non-finite input. Only when some output
        # is not finite: the check is one reduction (and on a GPU one synchronisation), this path several
        # passes (measured 4.5x the mixing on a CPU).
        bad = ~torch.isfinite(x)
        out = self._mix(x.masked_fill(bad, 0.0), num_tokens)
        return out.masked_fill(bad.cummax(dim=1).values, float("nan"))

    def _mix(self, x: torch.Tensor, num_tokens: int) -> torch.Tensor:
        weight = self.mixing_matrix(num_tokens).to(x.dtype)
        bias = self.token_bias(num_tokens)
        bias = None if bias is None else bias.to(x.dtype)
        if self.heads == 1:
            weight = weight.expand(x.shape[0], -1, -1)
            # A batched (T x T) @ (T x C): no transposed copy of the activations, and the bias is
            # summed inside the GEMM rather than by a separate pass.
            return torch.bmm(weight, x) if bias is None else torch.baddbmm(bias.unsqueeze(-1), weight, x)
        batch, _, channels = x.shape
        groups = x.view(batch, num_tokens, self.heads, channels // self.heads)
        out = torch.einsum("hij,bjhd->bihd", weight, groups)
        if bias is not None:
            out = out + bias.t()[None, :, :, None]
        return out.reshape(batch, num_tokens, channels)

    # --- incremental (causal) decoding -------------------------------------------------------
    # The state keeps the inputs seen so far in a token-major buffer of max_tokens rows, allocated
    # once: a step writes one row and reads a contiguous prefix, and a beam reorder gathers that
    # prefix into a second buffer (no concatenation, no copy of the unused rows).
    def step(self, x: torch.Tensor, state: Optional[MixerState], position: int) -> tuple[torch.Tensor, MixerState]:
        """Causal output ``(B, 1, C)`` at ``position`` for its input ``x`` (``(B, 1, C)``).

        ``state`` is None at position 0 and what the previous step returned afterwards. A step costs
        ``O(position * C)``, like attention with a key/value cache, and never recomputes the prefix.
        """
        if not self.causal:
            raise RuntimeError(f"step() is only defined for a causal {type(self).__name__}")
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"step() takes the newest position only, shape (batch, 1, channels); got {tuple(x.shape)}")
        if position < 0:
            raise ValueError(f"step() position must be >= 0, got {position}")
        self.check_length(position + 1)
        filled = 0 if state is None else state["length"]
        if filled != position:
            raise ValueError(
                f"step() at position {position} needs the inputs of positions 0..{position - 1}; "
                f"the state holds {filled} position(s)"
            )
        if state is None:
            buffer = x.new_empty(self.max_tokens, x.shape[0], x.shape[2])
            state = {"history": buffer, "spare": torch.empty_like(buffer), "length": 0}
        history = state["history"]
        history[position] = x[:, 0]
        state["length"] = position + 1
        seen = history[: position + 1]  # (t+1, B, C), contiguous
        row = self.mixing_row(position).to(x.dtype)
        bias = self.token_bias(position + 1)
        if self.heads == 1:
            out = torch.mm(row.unsqueeze(0), seen.view(position + 1, -1)).view(x.shape[0], 1, x.shape[2])
            bias = None if bias is None else bias[position]
        else:
            groups = seen.view(position + 1, x.shape[0], self.heads, -1)
            out = torch.einsum("hj,jbhd->bhd", row, groups).reshape(x.shape[0], 1, x.shape[2])
            bias = None if bias is None else bias[:, position].repeat_interleave(x.shape[2] // self.heads)
        return (out if bias is None else out + bias.to(x.dtype)), state

    @staticmethod
    def reorder_state(state: MixerState, new_order: torch.Tensor) -> MixerState:
        """Follow beam search's reordering (and dropping) of hypotheses along the batch axis."""
        filled, history, spare = state["length"], state["history"], state["spare"]
        if new_order.numel() != history.shape[1]:  # finished hypotheses were dropped: smaller buffers
            spare = history.new_empty(history.shape[0], new_order.numel(), history.shape[2])
            state["spare"] = torch.empty_like(spare)
        else:
            state["spare"] = history
        if history.requires_grad:  # out= is not differentiable
            spare[:filled] = history[:filled].index_select(1, new_order)
        else:
            torch.index_select(history[:filled], 1, new_order, out=spare[:filled])
        state["history"] = spare
        return state

    def extra_repr(self) -> str:
        heads = f", heads={self.heads}" if self.heads > 1 else ""
        return f"max_tokens={self.max_tokens}, causal={self.causal}{heads}, init={self.init}"



TOKEN_MIXERS: dict[str, type[TokenMixer]] = {}


def register_token_mixer(name: str):
    """Class decorator: make a :class:`TokenMixer` reachable by ``name`` (hydra, fairseq options)."""

    def register(cls: type[TokenMixer]) -> type[TokenMixer]:
        if name in TOKEN_MIXERS:
            raise ValueError(f"a token mixer named {name!r} is already registered ({TOKEN_MIXERS[name].__name__})")
        TOKEN_MIXERS[name] = cls
        return cls

    return register


TokenMixerSpec = Union[str, Callable[..., TokenMixer]]


def create_token_mixer(spec: TokenMixerSpec, max_tokens: int, dim: int, causal: bool = False, **kwargs: Any) -> TokenMixer:
    """Build a mixer from a registry name (``"dense"``, ``"toeplitz"``, ``"multihead"``) or a class/callable
    taking ``(max_tokens, dim=, causal=, **kwargs)``, as timm's blocks take ``mlp_layer``."""
    if isinstance(spec, str):
        if spec not in TOKEN_MIXERS:
            raise ValueError(f"unknown token mixer {spec!r}; expected one of {sorted(TOKEN_MIXERS)} or a TokenMixer class")
        spec = TOKEN_MIXERS[spec]
    return spec(max_tokens, dim=dim, causal=causal, **kwargs)
