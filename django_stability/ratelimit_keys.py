"""What a request is counted under: django-ratelimit's key syntax.

``ip``, ``user``, ``user_or_ip``, ``header:<name>``, ``get:<name>``,
``post:<name>``, a callable of ``(group, request)``, or the dotted path of one:
the same keys, with the same meaning, as django-ratelimit, so a policy moves
from one to the other unchanged. ``ip`` is the client address as
``django_stability.clientip`` finds it (trusted proxies only, IPv6 per /64).

Requests without the header or parameter a key reads share one counter (as
in django-ratelimit): leaving a header out must not be a way around a limit.
A key function of your own may answer None: the policy then does not apply to
that request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from django.utils.module_loading import import_string

from .clientip import client_key

logger = logging.getLogger("django_stability.ratelimit")

#: A key function: (group, request) -> the value counted, or None.
KeyFunction = Callable[[str, Any], "str | None"]

ANONYMOUS = "anonymous"

#: Keys whose failure was logged (once each, not once per request).
_failed: set[tuple[str, str]] = set()


def _user_id(request: Any) -> str | None:
    user = getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return str(user.pk)


def _ip(group: str, request: Any) -> str:
    return client_key(request)


def _user(group: str, request: Any) -> str:
    # Like django-ratelimit, anonymous requests share one counter.
    return _user_id(request) or ANONYMOUS


def _user_or_ip(group: str, request: Any) -> str:
    user = _user_id(request)
    return f"user:{user}" if user is not None else client_key(request)


def _header(name: str) -> KeyFunction:
    meta_key = "HTTP_" + name.upper().replace("-", "_")
    if name.lower().replace("_", "-") in {"content-type", "content-length"}:
        meta_key = name.upper().replace("-", "_")
    return lambda group, request: request.META.get(meta_key, "")


def _get(name: str) -> KeyFunction:
    return lambda group, request: request.GET.get(name, "")


def _post(name: str) -> KeyFunction:
    return lambda group, request: request.POST.get(name, "")


_SIMPLE: dict[str, KeyFunction] = {"ip": _ip, "user": _user, "user_or_ip": _user_or_ip}
_ACCESSORS: dict[str, Callable[[str], KeyFunction]] = {
    "header": _header,
    "get": _get,
    "post": _post,
}

KEY_FORMAT = (
    "ip, user, user_or_ip, header:<name>, get:<name>, post:<name>, "
    "or the dotted path of a function of (group, request)"
)


def parse_key(raw: Any) -> str:
    """Check a key as written in a policy; raise ValueError naming the accepted forms."""
    if callable(raw):
        return f"{raw.__module__}.{raw.__qualname__}"
    text = str(raw).strip() if isinstance(raw, str) else ""
    if text in _SIMPLE:
        return text
    if ":" in text:
        accessor, name = text.split(":", 1)
        if accessor in _ACCESSORS and name.strip():
            return f"{accessor}:{name.strip()}"
    elif "." in text:
        return text  # a dotted path; imported on first use (the import may be circular now)
    raise ValueError(f"Expected a key: {KEY_FORMAT}; got {raw!r}.")


@lru_cache(maxsize=512)
def key_function(key: str) -> KeyFunction:
    """The function for a key as written in a policy (resolved once per distinct key)."""
    simple = _SIMPLE.get(key)
    if simple is not None:
        return simple
    if ":" in key:
        accessor, name = key.split(":", 1)
        return _ACCESSORS[accessor](name)
    function: KeyFunction = import_string(key)
    if not callable(function):
        raise ValueError(f"{key} is not a function of (group, request)")
    return function


def needs_user(key: str) -> bool:
    """True when the key reads ``request.user``."""
    return key in {"user", "user_or_ip"}


def request_key(key: str, group: str, request: Any) -> str | None:
    """The value ``request`` is counted under for ``key``, or None when there is none.

    Never raises: a key function that fails is logged and the policy skipped,
    because a bug in a key function must not turn every request into a 500.
    """
    try:
        value = key_function(key)(group, request)
    except Exception:
        if (key, group) not in _failed:
            _failed.add((key, group))
            logger.exception("The rate-limit key %r of policy %r failed; not applied.", key, group)
        return None
    return None if value is None else str(value)
