"""Registries of the pluggable parts: labelers, calibrators, policies, aggregators, task types.

A built-in part registers itself where it is defined (``@CALIBRATORS.register("temperature")``);
a third-party package adds one through a Python entry point in the registry's group, e.g. in its
``pyproject.toml``::

    [project.entry-points."duolabel.aggregators"]
    my_vote = "my_package.vote:MyVote"

Entry points are read lazily, the first time a name is looked up or the names are listed, so
importing duolabel never imports a plug-in.

Each registry is declared next to its interface, except :data:`LABELERS`: the labelers sit
above the configuration in the layers, but the project file must accept a plug-in's
``backend`` (and read its settings class), so that registry is declared here, below both, and
filled by :mod:`duolabel.labelers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from duolabel.errors import ConfigError

__all__ = ["LABELERS", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to implementations of one interface, plus the entry points of ``group``.

    Examples
    --------
    >>> colours = Registry("colour", group="duolabel.example-colours")
    >>> @colours.register("red")
    ... class Red:
    ...     pass
    >>> colours.get("red") is Red, colours.names()
    (True, ['red'])
    >>> colours.get("blue")
    Traceback (most recent call last):
    ...
    duolabel.errors.ConfigError: unknown colour 'blue'; choose one of: red
    """

    def __init__(self, kind: str, *, group: str) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under ``name``."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(f"two {self.kind}s are registered as {name!r}; rename one of them")
        self._items[name] = obj

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for point in entry_points(group=self.group):
            if point.name not in self._items:
                self._items[point.name] = point.load()

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; a ConfigError lists the known names."""
        if name not in self._items:
            self._load_entry_points()
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> list[str]:
        """Every registered name, built-ins and entry points, sorted."""
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._items or name in self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


#: Labeler factories by backend name (``labeler[].backend``): each is called with the project
#: context and its ``labeler`` entry and returns an unfitted labeler. A factory's ``config``
#: attribute, a subclass of :class:`duolabel.config.LabelerSettings`, is the settings class
#: of a plug-in's entry (the built-in backends' classes are in :mod:`duolabel.config`).
LABELERS: Registry[Callable[..., Any]] = Registry("labeler", group="duolabel.labelers")
