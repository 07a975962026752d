"""Train an image classifier (ResMLP or any timm model) with the ResMLP paper's recipe; a hydra app.

Configuration: configs/train.yaml and its groups (model, data, optim, sched, aug, distill, experiment).
The run directory is output_dir (runs/<name>): checkpoints last.pt/best.pt, metrics.csv/json,
TensorBoard events, curves.png. Starting a killed run again continues from its last.pt (train.resume=auto).

Single process (CPU or one GPU):
    python vision/train.py                                    # resmlp_tiny_p4 on Fashion-MNIST, ~5 min on CPU
    python vision/train.py experiment=fmnist_vit              # the attention baseline: a ViT of equal size
    python vision/train.py model=vit_fmnist                   # ... with the ResMLP's learning rate, unchanged
    python vision/train.py train.epochs=10 model.kwargs.depth=8 name=deeper      # resize via model.kwargs
    python vision/train.py -m optim.lr=1e-3,2e-3,4e-3         # a sweep: runs/<name>/<overrides>/

ImageNet with the paper's presets, one node with 8 GPUs:
    torchrun --standalone --nproc_per_node 8 vision/train.py experiment=resmlp_s12_in1k data.root=/data/imagenet

Two nodes with 8 GPUs each (global batch stays train.batch_size); run on every node:
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank $NODE_RANK \
        --rdzv_backend c10d --rdzv_endpoint $MASTER_ADDR:29500 --rdzv_id resmlp_s12 \
        vision/train.py experiment=resmlp_s12_in1k data.root=/data/imagenet

On CPU torchrun uses Gloo: torchrun --standalone --nproc_per_node 2 vision/train.py train.device=cpu
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from resmlp_suite.cli import user_errors
from resmlp_suite.vision.training import train


@hydra.main(version_base=None, config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    # Hydra's job directory is output_dir for a single run and output_dir/<overrides> in a sweep.
    with open_dict(cfg):
        cfg.output_dir = HydraConfig.get().runtime.output_dir
    with user_errors():
        return train(cfg).get("val_top1")  # the value a hydra sweeper optimises


if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) > 0:
        # Only rank 0 writes into the run directory, hydra's own files included.
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    main()
