"""Slide job routes: ``POST /slides`` (upload or import path) -> 202 job; ``GET /jobs``, ``GET /jobs/{id}``,
``DELETE /jobs/{id}``. The API key middleware covers them like every route."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..jobs_app import JobService
from ..jobs_submit import JobError, check_slide, file_hash, resolve_import, store_upload, submit_existing

router = APIRouter(tags=["jobs"])
MAX_JSON_BYTES = 64 * 1024


class JobView(BaseModel):
    job_id: str
    slide_id: str | None = None
    state: str = Field(description="queued, reading, segmenting, encoding, predicting, done, failed, cancelled")
    stage: str | None = Field(None, description='the state, with tiles for encoding: "encoding 120/480 tiles"')
    progress: float = Field(0.0, description="0..1")
    elapsed_s: float = 0.0
    eta_s: float | None = Field(None, description="estimated seconds left while running")
    message: str | None = Field(None, description="why it failed (or was requeued)")
    prediction: dict[str, Any] | None = None
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    attempts: int | None = None
    tiles_done: int | None = None
    tiles_total: int | None = None
    worker: str | None = None
    source: str | None = None
    seconds: dict[str, float] | None = Field(None, description="seconds spent in each stage, when done")
    history: list[list] | None = Field(None, description="[stage, seconds since start(, tiles done, total)] per stage")


def get_jobs(request: Request) -> JobService:
    service = getattr(request.app.state, "jobs", None)
    if service is None:
        raise JobError(503, "slide jobs are off on this server (see its log: the jobs folder must be writable)")
    return service


JobsDep = Annotated[JobService, Depends(get_jobs)]


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _body_chunks(request: Request):  # noqa: ANN202
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _multipart_chunks(request: Request, jobs: JobService):  # noqa: ANN202
    """The ``file`` part of a multipart form, read in chunks (Starlette spools it to disk)."""
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise JobError(422, "multipart upload needs a 'file' part holding the slide")
    return upload


@router.post("/slides", status_code=202, response_model=JobView, responses={200: {"model": JobView}})
async def submit_slide(request: Request, jobs: JobsDep) -> JSONResponse:
    """Queue a new slide: a multipart upload (part ``file``), the raw bytes (``application/octet-stream`` with
    ``?filename=x.svs``), or JSON ``{"path": "relative/in/import/folder.svs"}``. The same content gives the
    same job (200 when it already existed, 202 when queued now)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    client = _client(request)
    jobs.check_client_limit(client)
    if kind == "application/json":
        body = await request.body()
        if len(body) > MAX_JSON_BYTES:
            raise JobError(413, "JSON body too large")
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise JobError(422, f"body is not JSON ({err})") from None
        if not isinstance(data, dict) or "path" not in data:
            raise JobError(422, 'JSON body must be {"path": "<file relative to the import folder>"}')
        path = resolve_import(jobs, data["path"])
        view, created = await run_in_threadpool(submit_existing, jobs, path, "import", client)
    else:
        if kind == "multipart/form-data":
            upload = await _multipart_chunks(request, jobs)
            name = upload.filename or ""

            async def chunks():  # noqa: ANN202
                while block := await upload.read(4 * 1024 * 1024):
                    yield block

            source = chunks()
        elif kind == "application/octet-stream":
            name = request.query_params.get("filename", "")
            source = _body_chunks(request)
        else:
            raise JobError(
                415,
                "send the slide as multipart/form-data (part 'file'), application/octet-stream "
                'with ?filename=, or JSON {"path": ...}',
            )
        path, digest = await store_upload(jobs, source, name)
        existing = jobs.store.get(digest[:24])
        if existing is None or existing.get("state") in ("failed", "cancelled"):
            try:
                await run_in_threadpool(check_slide, path, name)
            except JobError:
                path.unlink(missing_ok=True)
                raise
        view, created = await run_in_threadpool(jobs.submit, path, name, digest, "upload", client)
    return JSONResponse(view, status_code=202 if created else 200)


@router.get("/jobs", response_model=list[JobView])
def list_jobs(jobs: JobsDep) -> list[dict]:
    from ..jobs_queue import public_view

    return [public_view(j) for j in jobs.store.list()]


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, jobs: JobsDep) -> dict:
    from ..jobs_queue import public_view

    job = jobs.store.get(job_id) if job_id.isalnum() and len(job_id) <= 64 else None
    if job is None:
        raise JobError(404, f"no job {job_id!r}")
    return public_view(job)


@router.delete("/jobs/{job_id}", response_model=JobView)
def cancel_job(job_id: str, jobs: JobsDep) -> dict:
    if not (job_id.isalnum() and len(job_id) <= 64):
        raise JobError(404, f"no job {job_id!r}")
    return jobs.cancel(job_id)


__all__ = ["router", "file_hash"]
