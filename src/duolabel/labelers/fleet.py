"""Which server of a fleet of OpenAI-compatible servers gets the next request.

The policy is pure (no HTTP, a clock passed in), so it is tested with fakes; the ``openai``
labeler drives it, and a test drives that against two real servers.

- **Least loaded, bounded.** A request goes to the server in rotation with the fewest
  requests in flight (ties: the one that has answered fewest), and never to one that already
  has ``concurrency`` in flight: then it waits for a free slot.
- **Failover.** A request that failed on a server (refused, reset, timed out, 5xx, 429) is
  retried on a server it has not failed on, when one is in rotation; only when it has failed
  on every server in rotation is it retried on one of those (after a back-off, by the caller).
- **Out of rotation for a while.** A server that fails ``drop_after`` requests in a row leaves
  the rotation for ``cooldown`` seconds, doubled each time it is dropped again (up to
  ``max_cooldown``); afterwards it is tried again, and one more failure drops it again, while
  one answer puts it back for good. The last server in rotation is never dropped: with every
  other server gone, its requests are retried with back-off until they give up, and the run
  stops with what it kept, exactly as with a single server.

Examples
--------
>>> fleet = Fleet(["http://a/v1", "http://b/v1"], concurrency=1)
>>> first = fleet.choose()
>>> second = fleet.choose()
>>> first.url, second.url, fleet.choose()          # both full: the caller waits
('http://a/v1', 'http://b/v1', None)
>>> fleet.failed(first, "refused"); fleet.failed(fleet.choose(), "refused")
>>> fleet.in_rotation() == [second]                # a failed twice in a row: out for a while
True
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

__all__ = ["Fleet", "Server", "take"]


@dataclass(eq=False)
class Server:
    """One server's state as the dispatcher sees it."""

    url: str
    in_flight: int = 0
    answered: int = 0
    failures: int = 0  # in a row
    out_until: float = float("-inf")  # back in rotation at this clock time
    cooldown: float = 0.0  # the next time out (0: the base one)
    last_error: str = ""


class Fleet:
    """Least-loaded dispatch with bounded concurrency and failover over several servers.

    Parameters
    ----------
    urls : sequence of str
        The servers' base URLs, in the order ties are broken.
    concurrency : int
        Requests in flight at once on each server.
    drop_after : int
        Failures in a row that take a server out of rotation.
    cooldown : float
        Seconds a dropped server stays out the first time; doubled each time after.
    max_cooldown : float
        The longest time out.
    clock : callable
        Seconds, monotonic (a fake in tests).

    Examples
    --------
    >>> fleet = Fleet(["http://a/v1", "http://b/v1"], concurrency=2)
    >>> [fleet.choose().url for _ in range(4)]
    ['http://a/v1', 'http://b/v1', 'http://a/v1', 'http://b/v1']
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        concurrency: int,
        drop_after: int = 2,
        cooldown: float = 30.0,
        max_cooldown: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a fleet needs at least one server")
        self.servers = [Server(url) for url in urls]
        self.concurrency = max(1, concurrency)
        self.drop_after = max(1, drop_after)
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        # A labeler may be shared by threads, each with its own event loop: the counters
        # are guarded by a lock rather than by one loop's single thread.
        self._lock = threading.Lock()

    def in_rotation(self) -> list[Server]:
        """The servers that may be sent requests now."""
        now = self.clock()
        return [s for s in self.servers if s.out_until <= now]

    def choose(self, avoid: Collection[str] = ()) -> Server | None:
        """Reserve a slot on the least-loaded server for one request; None when all are full.

        ``avoid`` holds the URLs this request already failed on: they are used only when
        every server in rotation is among them.
        """
        with self._lock:
            up = self.in_rotation()
            fresh = [s for s in up if s.url not in avoid] or up
            free = [s for s in fresh if s.in_flight < self.concurrency]
            if not free:
                return None
            order = {id(s): k for k, s in enumerate(self.servers)}
            best = min(free, key=lambda s: (s.in_flight, s.answered, order[id(s)]))
            best.in_flight += 1
            return best

    def tried_all(self, avoid: Collection[str]) -> bool:
        """Whether a request that failed on ``avoid`` has no untried server in rotation."""
        return all(s.url in avoid for s in self.in_rotation())

    def answered(self, server: Server) -> None:
        """The server answered (any answer, even a refusal): it is healthy."""
        with self._lock:
            server.in_flight -= 1
            server.answered += 1
            server.failures = 0
            server.cooldown = 0.0

    def failed(self, server: Server, reason: str) -> None:
        """The server did not answer; after ``drop_after`` in a row it leaves the rotation."""
        with self._lock:
            server.in_flight -= 1
            server.failures += 1
            server.last_error = reason
            now = self.clock()
            if server.out_until > now or server.failures < self.drop_after:
                return
            others = [s for s in self.servers if s is not server and s.out_until <= now]
            if others:  # the last server standing stays: see the module docstring
                wait = server.cooldown or self.cooldown
                server.out_until = now + wait
                server.cooldown = min(wait * 2, self.max_cooldown)

    def next_return(self) -> float | None:
        """Seconds until the next dropped server is back in rotation; None when none is out."""
        now = self.clock()
        waits = [s.out_until - now for s in self.servers if s.out_until > now]
        return min(waits) if waits else None


async def take(fleet: Fleet, changed: asyncio.Condition, avoid: Collection[str] = ()) -> Server:
    """Wait for a slot on the fleet (:meth:`Fleet.choose`); ``changed`` is notified on release.

    The wait also wakes when a dropped server is due back, and at least every second, since
    another thread's event loop may free a slot without notifying this one.
    """
    async with changed:
        while (server := fleet.choose(avoid)) is None:
            back = fleet.next_return()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(back or 1.0, 1.0))
        return server
