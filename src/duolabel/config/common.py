"""What every section of the project file shares: strict models and registered names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from duolabel.core.aggregation import AGGREGATORS
from duolabel.core.aggregation import BUILT_IN as BUILT_IN_AGGREGATORS
from duolabel.core.calibration import CALIBRATORS
from duolabel.core.policies import POLICIES
from duolabel.core.registry import Registry
from duolabel.core.strategies import STRATEGIES

PROJECT_FILE = "duolabel.yaml"

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _choices(names: list[str]) -> str:
    quoted = [repr(name) for name in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


@dataclass(frozen=True)
class Choices:
    """The built-in names a registered-name setting takes (installed plug-ins add theirs);
    the project file's comments and the configuration docs list them."""

    names: tuple[str, ...]


def _registered(registry: Registry[Any], shown_first: tuple[str, ...]) -> AfterValidator:
    """Accept a name in ``registry`` (or in ``shown_first``, the built-ins' order in errors)."""

    def check(name: str) -> str:
        # Built-ins are registered when their core module loads; only an unknown name reads
        # the entry points (and so imports the installed plug-ins).
        if name in shown_first or name in registry:
            return name
        names = [*shown_first, *(n for n in registry.names() if n not in shown_first)]
        expected = {"expected": _choices(names)}
        raise PydanticCustomError("literal_error", "Input should be {expected}", expected)

    return AfterValidator(check)


_CALIBRATORS = ("temperature", "vector", "isotonic", "histogram", "auto", "none")
#: ``calibration.method``: a registered calibrator, or auto.
CalibratorName = Annotated[str, _registered(CALIBRATORS, _CALIBRATORS), Choices(_CALIBRATORS)]
_POLICIES = ("threshold", "dynamic", "meta")
#: ``routing.policy``: a registered routing policy.
PolicyName = Annotated[str, _registered(POLICIES, _POLICIES), Choices(_POLICIES)]
#: ``aggregation.method``: a registered aggregator.
AggregatorName = Annotated[
    str, _registered(AGGREGATORS, BUILT_IN_AGGREGATORS), Choices(tuple(BUILT_IN_AGGREGATORS))
]
_STRATEGIES = ("random", "least_confidence", "margin", "entropy")
#: ``learning.strategy``: a registered active-learning strategy.
StrategyName = Annotated[str, _registered(STRATEGIES, _STRATEGIES), Choices(_STRATEGIES)]
