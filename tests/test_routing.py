"""Matching requests to policies by URL name, path and method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from django_stability.policies import PolicySpec
from django_stability.routing import RouteFields, RouteIndex


@dataclass(frozen=True)
class Routed(RouteFields, PolicySpec):
    kind = "test-routed"


def index(*specs: Routed) -> RouteIndex[str]:
    return RouteIndex((spec, spec.name) for spec in specs)


def test_match_by_url_name_prefix_pattern_and_method(rf: Any) -> None:
    idx = index(
        Routed(name="by-name", url_names=("hello",)),
        Routed(name="by-prefix", path_prefixes=("/hel",)),
        Routed(name="posts-only", path_prefixes=("/hello/",), methods=("POST",)),
        Routed(name="by-pattern", path_patterns=(r"^/h.*o/$",)),
        Routed(name="elsewhere", path_prefixes=("/api/",)),
        Routed(name="unrouted"),
    )
    assert idx.match(rf.get("/hello/")) == ["by-name", "by-prefix", "by-pattern"]
    assert idx.match(rf.post("/hello/")) == ["by-name", "by-prefix", "posts-only", "by-pattern"]
    assert idx.match(rf.get("/nowhere/")) == []


def test_a_policy_matched_twice_is_listed_once(rf: Any) -> None:
    idx = index(Routed(name="both", url_names=("hello",), path_prefixes=("/", "/hello/")))
    assert idx.match(rf.get("/hello/")) == ["both"]


def test_empty_index_is_false_and_matches_nothing(rf: Any) -> None:
    idx = index(Routed(name="unrouted"))
    assert not idx
    assert idx.match(rf.get("/hello/")) == []


def test_cost_does_not_depend_on_the_number_of_prefix_policies(rf: Any) -> None:
    """1000 prefix policies: a request still does one lookup per distinct prefix length."""
    many = [Routed(name=f"p{i}", path_prefixes=(f"/api/v{i:04d}/",)) for i in range(1000)]
    idx = index(*many)
    assert idx._prefix_lengths == [len("/api/v0000/")]
    assert idx.match(rf.get("/api/v0420/items")) == ["p420"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("methods", "GET\nFETCH", "Unknown HTTP method"),
        ("path_prefixes", "api/", "starting with /"),
        ("path_patterns", "^/(unclosed", "not one"),
    ],
)
def test_bad_route_fields_are_refused(field: str, value: str, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Routed.build("x", {field: value})


def test_methods_are_upper_cased() -> None:
    assert Routed.build("x", {"methods": "get\npost"}).methods == ("GET", "POST")


def test_url_names_are_resolved_once_per_path(rf: Any, settings: Any) -> None:
    from django_stability.routing import _view_name

    idx = index(Routed(name="by-name", url_names=("hello",)))
    _view_name.cache_clear()
    for _ in range(5):
        assert idx.match(rf.get("/hello/")) == ["by-name"]
    assert _view_name.cache_info().misses == 1
    settings.ROOT_URLCONF = "tests.checks_urls"
    assert _view_name.cache_info().currsize == 0
