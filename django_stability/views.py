"""Views of the app: the status and the download of a background job.

Both answer only the job's owner. Anyone else, and anyone asking for an id
that does not exist, gets the same 404, so ids cannot be probed; ids are
random UUIDs in any case.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.core.files.storage import storages
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET

from .conf import settings
from .models import Job


def _not_found() -> JsonResponse:
    return _json({"detail": "No such job."}, status=404)


def _json(data: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(data, status=status)
    response["Cache-Control"] = "no-store"
    return response


def owned_job(request: HttpRequest, job_id: UUID) -> Job | None:
    """The job with that id if the signed-in user owns it, else None."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return Job.objects.filter(pk=job_id, owner_id=user.pk).first()


def status_data(job: Job) -> dict[str, Any]:
    """The job as its owner sees it (no traceback, no internals)."""
    data: dict[str, Any] = {
        "id": str(job.id),
        "name": job.name,
        "state": job.state,
        "progress": round(job.progress, 4),
        "message": job.message,
        "error": job.error,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "expires_at": job.expires_at.isoformat() if job.expires_at else None,
        "status_url": reverse("django_stability:job-status", args=[job.id]),
    }
    if job.state == Job.SUCCEEDED and job.result_name:
        data["download_url"] = reverse("django_stability:job-download", args=[job.id])
        data["filename"] = job.result_filename
        data["size"] = job.result_size
    return data


@require_GET
def job_status(request: HttpRequest, job_id: UUID) -> HttpResponse:
    """JSON state and progress; 303 to the download once the job has a result."""
    job = owned_job(request, job_id)
    if job is None:
        return _not_found()
    data = status_data(job)
    if "download_url" in data:
        response = _json(data, status=303)
        response["Location"] = data["download_url"]
        return response
    response = _json(data)
    if job.active:
        response["Retry-After"] = str(settings.JOBS_POLL_INTERVAL)
    return response


@require_GET
def job_download(request: HttpRequest, job_id: UUID) -> HttpResponseBase:
    """The job's result file, streamed from the storage."""
    job = owned_job(request, job_id)
    if job is None:
        return _not_found()
    if job.state == Job.EXPIRED:
        return _json({"detail": "The result of this job has expired."}, status=410)
    if job.state != Job.SUCCEEDED or not job.result_name:
        detail = f"The job is {job.state}; it has no result to download."
        return _json({"detail": detail, "state": job.state}, status=409)
    try:
        file = storages[settings.JOBS_STORAGE].open(job.result_name, "rb")
    except FileNotFoundError:
        return _json({"detail": "The result of this job is no longer stored."}, status=410)
    response = FileResponse(
        file,
        as_attachment=True,
        filename=job.result_filename or "result",
        content_type=job.result_content_type or "application/octet-stream",
    )
    response["Cache-Control"] = "private, no-store"
    return response
