"""Old home of the agreement and skill statistics, now :mod:`duolabel.core.quality`."""

# temporary shim: removed when the layers are merged

from __future__ import annotations

from duolabel.core.quality import binomial_interval, control_accuracy, fleiss_kappa, krippendorff_alpha

__all__ = ["binomial_interval", "control_accuracy", "fleiss_kappa", "krippendorff_alpha"]
