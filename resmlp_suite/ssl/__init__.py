"""Self-supervised pre-training: DINO (Caron et al., 2021) for any timm backbone, ResMLP first."""
from .dino import DINOHead, DINOLoss, MultiCropWrapper, cosine_schedule, teacher_temperature_schedule, update_teacher

__all__ = ["DINOHead", "DINOLoss", "MultiCropWrapper", "cosine_schedule", "teacher_temperature_schedule",
           "update_teacher"]
