"""The background-job checks (E050-E052, W050-W053): each fires when it should, only then."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery

from django_stability import checks
from django_stability.jobs.policy import JobSpec
from django_stability.test import override_policy

pytestmark = pytest.mark.django_db  # the checks read the policy snapshot

#: Celery apps the checks look at, by name (STABILITY["JOBS_CELERY_APP"] is a dotted path).
APPS: dict[str, Celery] = {}

#: A URLconf without the job URLs (for W053).
urlpatterns: list[Any] = []


def __getattr__(name: str) -> Any:
    if name in APPS:
        return APPS[name]
    raise AttributeError(name)


@pytest.fixture
def use_app(settings: Any) -> Any:
    def use(broker: str = "redis://127.0.0.1:6379/0", **conf: Any) -> Celery:
        app = Celery("stabtest-checks", broker=broker, set_as_current=False)
        app.conf.update(conf)
        APPS["current"] = app
        settings.STABILITY = {**settings.STABILITY, "JOBS_CELERY_APP": f"{__name__}.current"}
        return app

    return use


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


def test_the_test_settings_pass_every_job_check() -> None:
    for check in (
        checks.check_job_app,
        checks.check_job_visibility_timeout,
        checks.check_job_pool,
        checks.check_eager,
        checks.check_job_prefetch,
        checks.check_acks_late_bound,
        checks.check_job_urls,
    ):
        assert check() == [], check.__name__


def test_e050_countdown_plus_time_limit_past_the_visibility_timeout(use_app: Any) -> None:
    use_app(broker_transport_options={"visibility_timeout": 300})
    with override_policy(JobSpec(name="export", jitter=60, time_limit=240)):
        messages = checks.check_job_visibility_timeout()
    assert "django_stability.E050" in ids(messages)
    assert any("'export'" in m.msg and "300 s" in m.msg for m in messages)
    with override_policy(JobSpec(name="export", jitter=59, time_limit=240)):
        assert all("'export'" not in m.msg for m in checks.check_job_visibility_timeout())
    use_app(broker="amqp://guest@127.0.0.1//")  # RabbitMQ has no visibility timeout
    with override_policy(JobSpec(name="export", jitter=6000, time_limit=6000)):
        assert checks.check_job_visibility_timeout() == []


def test_e050_default_visibility_timeouts() -> None:
    specs = [JobSpec(name="long", jitter=599, time_limit=3000)]
    assert ids(checks.visibility_timeout_messages(specs, 3600.0, "redis")) == []
    specs = [JobSpec(name="long", jitter=600, time_limit=3000)]
    assert ids(checks.visibility_timeout_messages(specs, 3600.0, "redis")) == [
        "django_stability.E050"
    ]
    assert checks.visibility_timeout_messages([JobSpec(name="free")], 1.0, "redis") == []


def test_e051_time_limits_on_a_pool_that_ignores_them(use_app: Any) -> None:
    limited = [JobSpec(name="export", soft_time_limit=10)]
    for pool in ("solo", "threads", "celery.concurrency.thread", "celery.concurrency.solo"):
        assert ids(checks.time_limit_pool_messages(pool, limited)) == ["django_stability.E051"]
    for pool in ("prefork", "celery.concurrency.prefork", "gevent"):
        assert checks.time_limit_pool_messages(pool, limited) == []
    assert checks.time_limit_pool_messages("solo", [JobSpec(name="free")]) == []
    use_app(worker_pool="solo")
    with override_policy(JobSpec(name="export", time_limit=30)):
        messages = checks.check_job_pool()
    assert ids(messages) == ["django_stability.E051"] and "export" in messages[0].msg


def test_w050_eager_outside_tests(use_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_app(task_always_eager=True)
    assert checks.check_eager() == []  # this is a test run
    monkeypatch.setattr(checks, "_running_tests", lambda: False)
    assert ids(checks.check_eager()) == ["django_stability.W050"]
    use_app(task_always_eager=False)
    assert checks.check_eager() == []


def test_w051_prefetch_above_one_on_job_queues(use_app: Any) -> None:
    use_app(worker_prefetch_multiplier=4)
    with override_policy(JobSpec(name="export", queue="exports")):
        messages = checks.check_job_prefetch()
    assert ids(messages) == ["django_stability.W051"] and "exports" in messages[0].msg
    use_app(worker_prefetch_multiplier=1)
    assert checks.check_job_prefetch() == []


def test_w052_acks_late_requeued_without_bound(use_app: Any) -> None:
    use_app(task_acks_late=True, task_reject_on_worker_lost=True)
    assert ids(checks.check_acks_late_bound()) == ["django_stability.W052"]
    use_app(task_acks_late=True)
    assert checks.check_acks_late_bound() == []


def test_w053_job_urls_not_included(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.ROOT_URLCONF = __name__
    with monkeypatch.context() as patched:
        patched.setattr(checks, "_job_specs", lambda: ())
        assert checks.check_job_urls() == []  # no background job: nothing to say
    with override_policy(JobSpec(name="export")):
        assert ids(checks.check_job_urls()) == ["django_stability.W053"]


def test_e052_celery_app_that_cannot_be_imported(settings: Any) -> None:
    settings.STABILITY = {**settings.STABILITY, "JOBS_CELERY_APP": "nowhere.app"}
    messages = checks.check_job_app()
    assert ids(messages) == ["django_stability.E052"] and "nowhere.app" in messages[0].msg
    # The other job checks stay quiet rather than fail.
    assert checks.check_job_pool() == [] and checks.check_eager() == []
