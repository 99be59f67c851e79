"""Moved to :mod:`duolabel.core.operating`."""

# temporary shim: removed when the layers are merged
from duolabel.core.operating import golden_needed, majority_accuracy

__all__ = ["golden_needed", "majority_accuracy"]
