"""Vision side: ResMLP classifiers, weight conversion, inference folding."""
from .resmlp import ResMLP

__all__ = ["ResMLP"]
