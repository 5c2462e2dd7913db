"""What the jobs need to know about the Celery app and its broker.

Which app sends the jobs, which transport it uses, the broker's visibility
timeout, and how many messages wait in a queue: with Redis, one pipelined
``LLEN`` over the queue's priority lists (one round trip, on a client of our
own with short timeouts); with any other transport (RabbitMQ), a passive
queue declare, whose answer carries the message count.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.utils.module_loading import import_string

from ..conf import settings

#: The default priority steps and separator of kombu's Redis transport, used
#: when the app's ``broker_transport_options`` do not say otherwise.
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
REDIS_PRIORITY_SEP = "\x06\x16"

#: Transports that hide a delivered but unacknowledged message for a visibility
#: timeout and then deliver it again (to another worker).
VISIBILITY_TRANSPORTS = {"redis": 3600.0, "rediss": 3600.0, "sentinel": 3600.0, "sqs": 1800.0}


class BrokerUnreachable(Exception):
    """The broker could not be asked how deep a queue is."""


def celery_app() -> Any:
    """The Celery app jobs are sent with: ``JOBS_CELERY_APP``, or Celery's current app."""
    path = settings.JOBS_CELERY_APP
    if path:
        return import_string(path)
    from celery import current_app

    # current_app is a proxy; hand out the app itself.
    return getattr(current_app, "_get_current_object", lambda: current_app)()


def broker_url(app: Any) -> str:
    """The first broker URL the app writes to (failover lists keep their first entry)."""
    url = app.conf.broker_write_url or app.conf.broker_url or ""
    if isinstance(url, (list, tuple)):
        url = url[0] if url else ""
    return str(url).split(";")[0].strip()


def transport(app: Any) -> str:
    """The scheme of the broker URL: "redis", "rediss", "amqp", "sqs", "memory", ..."""
    url = broker_url(app)
    scheme = url.split("://", 1)[0].lower() if "://" in url else (url or "amqp")
    return scheme.split("+", 1)[0]


def transport_options(app: Any) -> dict[str, Any]:
    return dict(app.conf.broker_transport_options or {})


def visibility_timeout(app: Any) -> float | None:
    """Seconds after which the broker delivers an unacknowledged message again, or None.

    Only transports that emulate acknowledgements with a timeout (Redis, SQS)
    have one; RabbitMQ redelivers only when the consumer's connection closes.
    """
    default = VISIBILITY_TRANSPORTS.get(transport(app))
    if default is None:
        return None
    return float(transport_options(app).get("visibility_timeout", default))


#: The longest countdown this app gives a message itself, at most.
DEFAULT_HORIZON = 300.0


def countdown_horizon(app: Any) -> float:
    """The longest countdown to give a message: 300 s, or a quarter of the visibility timeout.

    A message that waits out its countdown in a worker past the broker's
    visibility timeout (Redis, SQS) is delivered a second time.
    """
    timeout = visibility_timeout(app)
    return DEFAULT_HORIZON if timeout is None else min(DEFAULT_HORIZON, timeout / 4)


def default_queue(app: Any) -> str:
    return str(app.conf.task_default_queue or "celery")


def redis_queue_keys(queue: str, options: dict[str, Any]) -> list[str]:
    """The Redis lists kombu keeps for ``queue``: one per priority step, with the global prefix."""
    prefix = str(options.get("global_keyprefix", ""))
    sep = str(options.get("sep", REDIS_PRIORITY_SEP))
    steps = options.get("priority_steps") or REDIS_PRIORITY_STEPS
    keys: list[str] = []
    for step in steps:
        key = f"{prefix}{queue}{sep}{step}" if step else f"{prefix}{queue}"
        if key not in keys:
            keys.append(key)
    return keys


class _Clients:
    """Broker clients of this process, made on first use and dropped after a fork."""

    def __init__(self) -> None:
        self.redis: dict[tuple[str, float], Any] = {}
        self.amqp: dict[tuple[str, float], Any] = {}
        self.lock = threading.Lock()
        self.publishing = threading.local()

    def reset(self) -> None:
        self.redis = {}
        self.amqp = {}
        self.lock = threading.Lock()
        self.publishing = threading.local()


_clients = _Clients()
os.register_at_fork(after_in_child=_clients.reset)


def _redis_client(url: str, timeout: float) -> Any:
    import redis

    key = (url, timeout)
    client = _clients.redis.get(key)
    if client is None:
        with _clients.lock:
            client = _clients.redis.get(key)
            if client is None:
                from ..store.redis import client_from_url

                client = client_from_url(url, socket_timeout=timeout, connect_timeout=timeout)
                _clients.redis[key] = client
    assert isinstance(client, redis.Redis)
    return client


def redis_depth(app: Any, queue: str, timeout: float) -> int:
    """Messages waiting in ``queue`` on a Redis broker: one pipelined LLEN per priority list."""
    import redis

    client = _redis_client(broker_url(app), timeout)
    try:
        with client.pipeline(transaction=False) as pipe:
            for key in redis_queue_keys(queue, transport_options(app)):
                pipe.llen(key)
            return sum(int(size) for size in pipe.execute())
    except (redis.RedisError, OSError) as exc:
        raise BrokerUnreachable(f"{type(exc).__name__}: {exc}") from exc


def amqp_depth(app: Any, queue: str, timeout: float) -> int:
    """Messages waiting in ``queue``, from a passive declare (RabbitMQ and other transports).

    A queue that does not exist yet holds nothing. The connection is kept for
    the next probe; a channel is opened per probe, because a passive declare of
    a missing queue closes its channel.
    """
    from kombu.exceptions import ChannelError, OperationalError

    key = (broker_url(app), timeout)
    with _clients.lock:
        connection = _clients.amqp.get(key)
        if connection is None:
            connection = app.connection_for_read(connect_timeout=timeout)
            _clients.amqp[key] = connection
        try:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            channel = connection.channel()
        except (OperationalError, OSError) as exc:
            _clients.amqp.pop(key, None)
            _release(connection)
            raise BrokerUnreachable(f"{type(exc).__name__}: {exc}") from exc
        try:
            return int(channel.queue_declare(queue=queue, passive=True).message_count)
        except ChannelError as exc:
            if _not_found(exc):
                return 0
            raise BrokerUnreachable(f"{type(exc).__name__}: {exc}") from exc
        except (OperationalError, OSError) as exc:
            _clients.amqp.pop(key, None)
            _release(connection)
            raise BrokerUnreachable(f"{type(exc).__name__}: {exc}") from exc
        finally:
            _release(channel)


def _not_found(exc: Exception) -> bool:
    code = getattr(exc, "code", None) or getattr(exc, "reply_code", None)
    return code in (404, "404") or "NOT_FOUND" in str(exc)


def _release(resource: Any) -> None:
    try:
        resource.close()
    except Exception:
        pass


def publishing_connection(app: Any) -> Any:
    """A connection of this thread to send jobs with, that fails fast when the broker is down.

    Celery's own producer pool waits for the broker up to
    ``broker_connection_timeout`` (4 s by default), retrying: a request
    thread must not. This one tries once, with ``JOBS_PROBE_TIMEOUT``; kombu
    connects it again on the next use after a failure.
    """
    timeout = settings.JOBS_PROBE_TIMEOUT
    key = (broker_url(app), timeout)
    cached = getattr(_clients.publishing, "connection", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    options = {**transport_options(app), "max_retries": 0}
    if transport(app) in {"redis", "rediss"}:
        # A hung Redis must not hold the request either.
        options.setdefault("socket_timeout", timeout)
        options.setdefault("socket_connect_timeout", timeout)
    connection = app.connection_for_write(connect_timeout=timeout, transport_options=options)
    _clients.publishing.connection = (key, connection)
    return connection


def queue_depth(app: Any, queue: str) -> int:
    """Messages waiting in ``queue`` on the app's broker; raises ``BrokerUnreachable``."""
    timeout = settings.JOBS_PROBE_TIMEOUT
    if transport(app) in {"redis", "rediss"}:
        return redis_depth(app, queue, timeout)
    return amqp_depth(app, queue, timeout)
