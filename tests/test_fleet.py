"""The fleet dispatcher's policy, with a fake clock (the real servers: test_labeler_fleet.py)."""

from __future__ import annotations

import asyncio

import pytest

from duolabel.config.project import parse_config
from duolabel.errors import ConfigError
from duolabel.labelers.fleet import Fleet, take

A, B, C = "http://a/v1", "http://b/v1", "http://c/v1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fleet(*urls: str, concurrency: int = 2, **options: float) -> tuple[Fleet, Clock]:
    clock = Clock()
    return Fleet(list(urls or (A, B)), concurrency=concurrency, clock=clock, **options), clock


def test_requests_go_to_the_least_loaded_server_and_never_past_its_bound() -> None:
    f, _ = fleet(A, B, C, concurrency=2)
    got = [f.choose() for _ in range(6)]
    assert [s.url for s in got] == [A, B, C, A, B, C]  # type: ignore[union-attr]
    assert f.choose() is None  # every server has 2 in flight: the request waits
    f.answered(got[4])  # b frees a slot
    assert f.choose().url == B  # type: ignore[union-attr]
    assert max(s.in_flight for s in f.servers) == 2


def test_ties_go_to_the_server_that_answered_fewest() -> None:
    f, _ = fleet(A, B, concurrency=1)
    a = f.choose()
    f.answered(a)  # type: ignore[arg-type]
    assert f.choose().url == B  # type: ignore[union-attr]  # both idle; a has answered one


def test_a_failed_request_goes_to_another_server_and_waits_for_it_rather_than_return() -> None:
    f, _ = fleet(A, B, concurrency=1)
    a = f.choose()
    f.failed(a, "refused")  # type: ignore[arg-type]
    assert f.choose(avoid={A}).url == B  # type: ignore[union-attr]
    # b is full now: the retry waits for b, although a has room.
    assert f.choose(avoid={A}) is None
    assert not f.tried_all({A}) and f.tried_all({A, B})
    # Failed on every server in rotation: then any of them.
    assert f.choose(avoid={A, B}).url == A  # type: ignore[union-attr]


def test_a_server_failing_in_a_row_leaves_for_a_cooldown_doubled_each_time() -> None:
    f, clock = fleet(A, B, concurrency=4, cooldown=10.0)
    a = f.servers[0]
    for _ in range(2):
        f.failed(f.choose(avoid={B}), "refused")  # type: ignore[arg-type]
    assert f.in_rotation() == [f.servers[1]] and f.next_return() == 10.0
    assert all(f.choose().url == B for _ in range(4))  # type: ignore[union-attr]
    assert f.choose() is None  # b full; a is out, not a spare
    clock.now = 10.0
    assert a in f.in_rotation() and f.choose().url == A  # type: ignore[union-attr]  # tried again
    f.failed(a, "refused")  # one more failure after coming back: out again, for twice as long
    assert a not in f.in_rotation() and f.next_return() == 20.0
    clock.now = 30.0
    f.answered(f.choose(avoid={B}))  # type: ignore[arg-type]  # it answers: healthy again
    f.failed(f.choose(avoid={B}), "timed out")  # type: ignore[arg-type]  # one failure is not two
    assert a in f.in_rotation() and a.cooldown == 0.0 and a.last_error == "timed out"


def test_one_failure_then_an_answer_keeps_a_server() -> None:
    f, _ = fleet(A, B)
    f.failed(f.choose(avoid={B}), "503")  # type: ignore[arg-type]
    f.answered(f.choose(avoid={B}))  # type: ignore[arg-type]
    f.failed(f.choose(avoid={B}), "503")  # type: ignore[arg-type]
    assert len(f.in_rotation()) == 2


def test_the_last_server_in_rotation_is_never_dropped() -> None:
    f, _ = fleet(A, B, concurrency=8)
    for _ in range(2):
        f.failed(f.choose(avoid={B}), "refused")  # type: ignore[arg-type]
    for _ in range(5):
        f.failed(f.choose(avoid={A}), "refused")  # type: ignore[arg-type]
    assert [s.url for s in f.in_rotation()] == [B]  # retried with back-off by the caller
    single, _ = fleet(A)
    for _ in range(5):
        single.failed(single.choose(), "refused")  # type: ignore[arg-type]
    assert single.in_rotation() == single.servers


def test_take_waits_for_a_released_slot() -> None:
    f, _ = fleet(A, concurrency=1)

    async def scenario() -> list[str]:
        changed = asyncio.Condition()
        first = await take(f, changed)
        order: list[str] = []

        async def second() -> None:
            server = await take(f, changed)
            order.append(f"second got {server.url}")

        waiter = asyncio.create_task(second())
        await asyncio.sleep(0.05)
        order.append("first done")
        f.answered(first)
        async with changed:
            changed.notify_all()
        await asyncio.wait_for(waiter, timeout=2)
        return order

    assert asyncio.run(scenario()) == ["first done", f"second got {A}"]


def test_an_empty_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one server"):
        Fleet([], concurrency=1)


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ([], "expected at least one URL"),
        ([A, A], f"expected each URL once ({A} is listed twice)"),
        ([A, ""], "expected a URL or a list of URLs"),
        (3, "expected a URL or a list of URLs"),
    ],
)
def test_a_bad_server_list_is_one_line_naming_the_key(base_url: object, expected: str) -> None:
    data = {
        "task": {"labels": [{"name": "a"}, {"name": "b"}]},
        "labeler": {"backend": "openai", "model": "m", "base_url": base_url},
    }
    with pytest.raises(ConfigError) as error:
        parse_config(data)
    text = str(error.value)
    assert "\n" not in text and "key 'labeler.0.base_url'" in text and expected in text


def test_one_url_or_a_list_is_read() -> None:
    for base_url in (A, [A, B]):
        data = {
            "task": {"labels": [{"name": "a"}, {"name": "b"}]},
            "labeler": {"backend": "openai", "model": "m", "base_url": base_url},
        }
        assert parse_config(data).labeler[0].base_url == base_url  # type: ignore[union-attr]
