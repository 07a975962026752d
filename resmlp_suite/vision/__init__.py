"""Vision side: ResMLP classifiers, weight conversion, inference folding."""
from .fold import fold_for_inference
from .resmlp import ResMLP
from .weights import CheckpointMismatchError, export_state_dict, load_checkpoint, to_suite_layout

__all__ = ["ResMLP", "CheckpointMismatchError", "export_state_dict", "fold_for_inference", "load_checkpoint", "to_suite_layout"]
