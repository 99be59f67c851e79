"""How amounts of money and wall times read wherever duolabel prints them (CLI tables, the plan,
the report), so that one amount reads the same everywhere."""

from __future__ import annotations

import math

__all__ = ["duration", "fmt_figure", "money"]


def money(value: float, currency: str) -> str:
    """An amount as the CLI shows it; a fraction of a cent keeps two significant digits.

    Examples
    --------
    >>> money(0.0000053, "USD"), money(0.5, "USD"), money(1234.5, "EUR")
    ('5.3e-06 USD', '0.5000 USD', '1,234.50 EUR')
    """
    if 0 < abs(value) < 1e-3:
        return f"{value:.2g} {currency}"
    return f"{value:,.4f} {currency}" if abs(value) < 1 else f"{value:,.2f} {currency}"


def duration(seconds: float) -> str:
    """A wall time in the unit that reads best.

    Examples
    --------
    >>> duration(42), duration(600), duration(7200)
    ('42 s', '10 min', '2.0 h')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def fmt_figure(value: float | None, digits: int = 3) -> str:
    """A figure for a report table: ``digits`` decimals, a dash when missing or NaN.

    Examples
    --------
    >>> fmt_figure(0.91234), fmt_figure(None), fmt_figure(float("nan")), fmt_figure(2, 1)
    ('0.912', '–', '–', '2.0')
    """
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
