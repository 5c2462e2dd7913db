"""The book's defensive integration, rewritten with guard (used by the docs and the tests)."""

from django_stability import guard
from django_stability.outbound import session

USER_SERVICE = "http://users.internal"

# Timeouts, the deadline and bounded DNS; no per-host guard, the guard is below.
http = session(per_host_guards=False)


class ProfileNotFound(Exception):
    """The service answered 404: an answer, not a failure of the service."""


profiles = guard(
    "user-service",
    timeout=2,
    total_timeout=4,
    idempotent=True,
    retries=2,
    fallback="last_good",
    breaker={
        "failure_rate_threshold": 50,
        "window_size": 20,
        "minimum_calls": 10,
        "wait_in_open": 30,
        "ignore_exceptions": ("docs.examples.user_profiles.ProfileNotFound",),
    },
    bulkhead={"max_concurrent": 10},
)


@profiles
def fetch_user_profile(user_id: int) -> dict:
    response = http.get(f"{USER_SERVICE}/users/{user_id}", headers={"Accept": "application/json"})
    if response.status_code == 404:
        raise ProfileNotFound(user_id)
    response.raise_for_status()
    return validate_user_schema(response.json())


def get_user_profile(user_id: int) -> dict | None:
    try:
        return fetch_user_profile(user_id)
    except ProfileNotFound:
        return None


def validate_user_schema(data: dict) -> dict:
    if not isinstance(data.get("id"), int) or not isinstance(data.get("name"), str):
        raise ValueError(f"not a user profile: {data!r}")
    return data
