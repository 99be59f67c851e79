"""Moved to :mod:`duolabel.core.policies`."""

# temporary shim: removed when the layers are merged
from duolabel.core.policies import expert_tier

__all__ = ["expert_tier"]
