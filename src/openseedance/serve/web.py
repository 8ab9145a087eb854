"""What the web page at `/` reads: a key's jobs from both APIs (Ark tasks and OpenAI videos) in one
shape, Ark's task object with the job's `api` and `prompt`, to list, watch, cancel and delete them.
The page submits through the Ark API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from openseedance.serve import ark
from openseedance.serve.api import ApiError, Service
from openseedance.serve.bounds import shown
from openseedance.serve.jobs import Job

router = APIRouter(prefix="/api/jobs")


def render(job: Job, base_url: str) -> dict[str, Any]:
    return {**ark.render(job, base_url), "api": job.api, "prompt": job.spec.prompt}


def _owned(service: Service, owner: str, job_id: str) -> Job:
    job = service.owned(owner, job_id)
    if job is None:
        raise ApiError(404, "ResourceNotFound", f"no job {shown(job_id)}", "job_id")
    return job


@router.get("")
async def list_jobs(request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    owner = service.authorize(request)
    page_num = ark.page_param(request.query_params.get("page_num", "1"), "page_num", 1, 500)
    page_size = ark.page_param(request.query_params.get("page_size", "20"), "page_size", 1, 100)
    items, total = service.store.list(owner, offset=(page_num - 1) * page_size, limit=page_size)
    return {"items": [render(j, str(request.base_url)) for j in items], "total": total}


@router.get("/{job_id}")
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    service: Service = request.app.state.service
    return render(_owned(service, service.authorize(request), job_id), str(request.base_url))


@router.delete("/{job_id}")
async def delete_job(job_id: str, request: Request) -> Response:
    service: Service = request.app.state.service
    ark.cancel_or_remove(service, _owned(service, service.authorize(request), job_id))
    return Response(status_code=200, content=b"{}", media_type="application/json")
