"""Self-supervised DINO pre-training of a backbone (ResMLP or any timm model); a hydra app.

Configuration: configs/train_dino.yaml (DINO's options under dino.*, optim.*, sched.*), the model and data
groups of vision/train.py, and the presets in configs/dino_experiment/. The run directory is output_dir
(runs/<name>): last.pt (student, teacher, heads, optimizer, centre, RNG states), teacher_backbone.pt (the
teacher's backbone alone, to fine-tune or evaluate), metrics.csv/json (with the teacher's k-NN top-1),
TensorBoard events. Starting a killed run again continues from its last.pt (train.resume=auto).

Single process (CPU or one GPU):
    python vision/train_dino.py                             # resmlp_fmnist on Fashion-MNIST (fmnist_tiny)
    python vision/train_dino.py dino.local_crops_number=2   # + 2 local crops, resized to the global size

ImageNet, ResMLP-S12 as in the paper's Table 2 (300 epochs), one node with 8 GPUs:
    torchrun --standalone --nproc_per_node 8 vision/train_dino.py dino_experiment=resmlp_s12_in1k \
        data.root=/data/imagenet

Then fine-tune the teacher's backbone (with a supervised recipe: the paper's fine-tuning one is unpublished):
    python vision/train.py experiment=resmlp_s12_in1k data.root=/data/imagenet \
        model.pretrained_file=runs/dino_resmlp_s12_in1k/teacher_backbone.pt

On CPU torchrun uses Gloo: torchrun --standalone --nproc_per_node 2 vision/train_dino.py train.device=cpu
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from resmlp_suite.cli import user_errors
from resmlp_suite.ssl.training import train


@hydra.main(version_base=None, config_path="../configs", config_name="train_dino")
def main(cfg: DictConfig) -> Optional[float]:
    # Hydra's job directory is output_dir for a single run and output_dir/<overrides> in a sweep.
    with open_dict(cfg):
        cfg.output_dir = HydraConfig.get().runtime.output_dir
    with user_errors():
        return train(cfg).get("knn_top1")  # the value a hydra sweeper optimises


if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) > 0:
        # Only rank 0 writes into the run directory, hydra's own files included.
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]
    main()
