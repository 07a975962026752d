"""ResMLP image classifiers (Touvron et al., 2021), registered in timm's model registry.

The factories are thin: every variant is one :class:`ResMLP`. Names avoid timm's own
(``resmlp_12_224``...) so both can live in one process. Every official release is a pretrained tag
(:data:`RELEASES`), so ``timm.create_model("resmlp_s12.fb_in1k", pretrained=True)`` loads timm's Hub copy
(or the DeiT repo's file), at any multiple of the patch size (``img_size=384``): :func:`checkpoint_filter_fn`
reads the DeiT-repo, timm and suite layouts and resamples the token mixing to the model's grid. A local
file loads the same way: ``pretrained_cfg_overlay=dict(file=...)``.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

import torch
from torch import nn
from timm.layers import PatchEmbed, to_2tuple
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..block import NormSpec, ResMLPBlock, create_norm, init_resmlp_weights
from ..token_mixers import TokenMixerSpec

__all__ = ["RELEASES", "ResMLP", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)


class ResMLP(nn.Module):
    """Patch embedding, ``depth`` ResMLP blocks, a final Affine, average pooling over patches, a linear head.

    ``token_mixer`` / ``token_mixer_kwargs`` / ``norm_layer`` choose research variants of the blocks
    (see :class:`~resmlp_suite.block.ResMLPBlock`); the defaults are the paper's and load its weights.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        init_values: float = 1e-4,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        token_mixer: TokenMixerSpec = "dense",
        token_mixer_kwargs: Optional[dict[str, Any]] = None,
        norm_layer: NormSpec = "affine",
    ) -> None:
        super().__init__()
        img_size = to_2tuple(img_size)
        if img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(f"img_size must be a multiple of patch_size, got img_size={img_size}, patch_size={patch_size}")
        if global_pool not in ("", "avg"):
            raise ValueError(f"global_pool must be '' or 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.img_size = img_size
        self.in_chans = in_chans
        self.patch_size = patch_size
        self.stem = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
        num_patches = self.stem.num_patches
        self.num_patches = num_patches
        self.blocks = nn.Sequential(
            *[
                ResMLPBlock(
                    embed_dim,
                    num_patches,
                    mlp_ratio=mlp_ratio,
                    init_values=init_values,
                    drop=proj_drop_rate,
                    drop_path=drop_path_rate,
                    token_mixer=token_mixer,
                    token_mixer_kwargs=token_mixer_kwargs,
                    norm_layer=norm_layer,
                )
                for _ in range(depth)
            ]
        )
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.norm = create_norm(norm_layer, embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_resmlp_weights)  # convolutions keep PyTorch's default, as in the DeiT repo

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_chans, *self.img_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects images of shape (batch, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        # The stem returns a transposed (channels-first) view; elementwise ops would keep that layout and every
        # channel GEMM would copy its input. One copy here gives the whole stream a contiguous (B, T, C) layout.
        x = self.stem(x).contiguous()
        x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: ResMLP) -> dict[str, torch.Tensor]:
    """Official DeiT-repo, timm or suite weights in this model's layout (timm's pretrained hook).

    Token mixing trained on another patch grid (224 px weights in a 384 px model) is resampled to the
    model's grid (:func:`~resmlp_suite.vision.resample.resample_token_mixing`), and a classifier the model
    does not have (a backbone with ``num_classes=0``, such as the DINO tags) is dropped. Weights without a
    classifier (a backbone: ``vision/train_dino.py``'s ``teacher_backbone.pt``) give a model that has one
    its own freshly initialised head, so the rest still loads strictly.
    """
    from .resample import resample_state_dict
    from .weights import to_suite_layout

    state_dict, old_grid = resample_state_dict(to_suite_layout(state_dict), model.stem.grid_size)
    if old_grid is not None:
        _logger.info("resampled the token mixing of %s from a %dx%d to a %dx%d patch grid",
                     type(model).__name__, *old_grid, *model.stem.grid_size)
    if not isinstance(model.head, nn.Linear):
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
    elif not any(k.startswith("head.") for k in state_dict):
        _logger.info("the weights have no classifier: %s keeps its initial head", type(model).__name__)
        state_dict.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    return state_dict


def _create_resmlp(variant: str, pretrained: bool = False, **kwargs: Any) -> ResMLP:
    return build_model_with_cfg(
        ResMLP,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": None,
        "crop_pct": 0.9,  # the paper evaluates at 224 / 0.9, bicubic, centre crop
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.proj",
        "classifier": "head",
        "license": "apache-2.0",
        "paper_ids": "arXiv:2105.03404",
        **kwargs,
    }


# The official releases: our tag -> (timm's name of the same weights, the DeiT repo's file, the paper's
# ImageNet-1k top-1 at 224 px; for the DINO backbones the linear probe, Table 2).
RELEASES: dict[str, tuple[str, str, float]] = {
    "resmlp_s12.fb_in1k": ("resmlp_12_224.fb_in1k", "resmlp_12_no_dist", 76.6),
    "resmlp_s24.fb_in1k": ("resmlp_24_224.fb_in1k", "resmlp_24_no_dist", 79.4),
    "resmlp_s36.fb_in1k": ("resmlp_36_224.fb_in1k", "resmlp_36_no_dist", 79.7),
    "resmlp_b24.fb_in1k": ("resmlp_big_24_224.fb_in1k", "resmlpB_24_no_dist", 81.0),
    "resmlp_s12.fb_distilled_in1k": ("resmlp_12_224.fb_distilled_in1k", "resmlp_12_dist", 77.8),
    "resmlp_s24.fb_distilled_in1k": ("resmlp_24_224.fb_distilled_in1k", "resmlp_24_dist", 80.8),
    "resmlp_s36.fb_distilled_in1k": ("resmlp_36_224.fb_distilled_in1k", "resmlp_36_dist", 81.0),
    "resmlp_b24.fb_distilled_in1k": ("resmlp_big_24_224.fb_distilled_in1k", "resmlpB_24_dist", 83.6),
    "resmlp_b24.fb_in22k_ft_in1k": ("resmlp_big_24_224.fb_in22k_ft_in1k", "resmlpB_24_22k", 84.4),
    "resmlp_s12.fb_dino": ("resmlp_12_224.fb_dino", "resmlp_12_dino", 67.5),
    "resmlp_s24.fb_dino": ("resmlp_24_224.fb_dino", "resmlp_24_dino", 72.8),
}


def _release_cfg(tag: str) -> dict[str, Any]:
    timm_name, deit_file, top1 = RELEASES[tag]
    dino = tag.endswith(".fb_dino")
    return _cfg(
        hf_hub_id=f"timm/{timm_name}",  # timm's copy of the weights (timm layout), tried first
        url=f"https://dl.fbaipublicfiles.com/deit/{deit_file}.pth",  # the DeiT repo's file
        num_classes=0 if dino else 1000,  # DINO: a backbone; give num_classes=... for a new head
        description=(f"self-supervised (DINO) backbone; paper: linear probe {top1}" if dino
                     else f"paper: ImageNet-1k top-1 {top1}"),
    )


default_cfgs = generate_default_cfgs(
    {
        **{tag: _release_cfg(tag) for tag in RELEASES},
        "resmlp_b24_p16.untrained": _cfg(),  # the paper's B24/16: no weights were released
        "resmlp_tiny_p4.untrained": _cfg(num_classes=10, input_size=(1, 28, 28), crop_pct=1.0, mean=(0.5,), std=(0.5,)),
    }
)


@register_model
def resmlp_s12(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """ResMLP-S12: patch 16, dim 384, 12 blocks (15.35 M params, 3.01 GMACs at 224 px)."""
    args = dict(patch_size=16, embed_dim=384, depth=12, init_values=0.1)
    return _create_resmlp("resmlp_s12", pretrained, **dict(args, **kwargs))


@register_model
def resmlp_s24(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """ResMLP-S24: patch 16, dim 384, 24 blocks (30.02 M, 5.96 G)."""
    args = dict(patch_size=16, embed_dim=384, depth=24, init_values=1e-5)
    return _create_resmlp("resmlp_s24", pretrained, **dict(args, **kwargs))


@register_model
def resmlp_s36(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """ResMLP-S36: patch 16, dim 384, 36 blocks (44.69 M, 8.91 G)."""
    args = dict(patch_size=16, embed_dim=384, depth=36, init_values=1e-6)
    return _create_resmlp("resmlp_s36", pretrained, **dict(args, **kwargs))


@register_model
def resmlp_b24(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """ResMLP-B24 with patch 8, as released ("resmlpB_24"; 129.14 M, 100.23 G)."""
    args = dict(patch_size=8, embed_dim=768, depth=24, init_values=1e-6)
    return _create_resmlp("resmlp_b24", pretrained, **dict(args, **kwargs))


@register_model
def resmlp_b24_p16(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """ResMLP-B24 with patch 16, as in the paper's Table 1 (115.74 M, 23.02 G; LayerScale init unpublished, 1e-6 as B24/8)."""
    args = dict(patch_size=16, embed_dim=768, depth=24, init_values=1e-6)
    return _create_resmlp("resmlp_b24_p16", pretrained, **dict(args, **kwargs))


@register_model
def resmlp_tiny_p4(pretrained: bool = False, **kwargs: Any) -> ResMLP:
    """A CPU-sized ResMLP for 28 px grey images: patch 4 (49 tokens), dim 128, 8 blocks."""
    args = dict(img_size=28, in_chans=1, num_classes=10, patch_size=4, embed_dim=128, depth=8, init_values=0.1)
    return _create_resmlp("resmlp_tiny_p4", pretrained, **dict(args, **kwargs))
