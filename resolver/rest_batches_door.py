"""Batch uploads over REST (registry/batch_jobs.py): many identifiers at once, written in
the background, with progress any worker can answer.

    POST /api/batches[?format=jsonl|csv&replace=true]   body: JSON Lines or CSV
         -> 202 {"job": {...}} and Location: /api/batches/{id}
    GET  /api/batches                                   the caller's kept jobs, newest first
    GET  /api/batches/{id}[?results=false]              progress and each line's result

Credentials as on /api/handles (Basic, Bearer, REST session): a job is its owner's (and
the server administrators'). The format is ``?format=``, else the Content-Type
(``text/csv`` is CSV; anything else JSON Lines). The console's upload page calls the same
methods (``start``, ``progress``) with its signed-in administrator.
"""

from __future__ import annotations

from aiohttp import web

from idnode.errors import RequestRefused
from idnode.registry.auth import Identity
from idnode.registry.batch_jobs import MAX_LINES, BatchRefused, parse_upload

from .codec import ResponseCode
from .rest_door import MAX_BODY, RestPart, reply

RC = ResponseCode
BATCHES = "/api/batches"
CSV_TYPES = frozenset({"text/csv", "application/csv"})


def upload_format(request: web.Request) -> str:
    asked = request.query.get("format", "").lower()
    if asked in ("csv", "jsonl"):
        return asked
    if asked:
        raise BatchRefused("format is jsonl or csv")
    return "csv" if request.content_type in CSV_TYPES else "jsonl"


class BatchesApi(RestPart):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(BATCHES, self.post)
        app.router.add_get(BATCHES, self.list_all)
        app.router.add_get(BATCHES + "/{id}", self.get)

    async def post(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        return await self.start(request, who)

    async def start(self, request: web.Request, who: Identity) -> web.Response:
        """Read the upload in ``request`` and start its job as ``who``."""
        if request.content_length is not None and request.content_length > MAX_BODY:
            return reply(
                RC.INVALID_VALUE,
                status=413,
                message=f"an upload is at most {MAX_BODY >> 20} MiB and {MAX_LINES} lines",
            )
        replace = request.query.get("replace", "").lower() == "true"
        try:
            kind = upload_format(request)
            raw = await request.read()
            try:
                text = raw.decode("utf-8-sig")  # a spreadsheet's CSV often starts with a BOM
            except UnicodeDecodeError:
                raise BatchRefused("the upload is not UTF-8 text") from None
            lines = parse_upload(text, kind)
            job = await self.registry.batch_jobs.start(lines, who, replace=replace)
        except BatchRefused as exc:
            return reply(RC.INVALID_VALUE, status=exc.status, message=str(exc))
        except RequestRefused as exc:
            return reply(exc.rc, status=403, message=exc.message)
        location = f"{BATCHES}/{job.id}"
        response = reply(RC.SUCCESS, status=202, job=job.to_json(results=False))
        response.headers["Location"] = location
        return response

    async def list_all(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        jobs = await self.registry.batch_jobs.of(who)
        return reply(RC.SUCCESS, jobs=[j.to_json(results=False) for j in jobs])

    async def get(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        results = request.query.get("results", "true").lower() != "false"
        return await self.progress(request.match_info["id"], who, results=results)

    async def progress(self, job_id: str, who: Identity, *, results: bool = True) -> web.Response:
        """A job's progress (and results) as JSON; 404 for a job not ``who``'s."""
        job = None
        if len(job_id) <= 32 and job_id.isascii() and job_id.isalnum():
            job = await self.registry.batch_jobs.get(job_id, who, results=results)
        if job is None:
            return reply(RC.HANDLE_NOT_FOUND, status=404, message=f"no upload {job_id} of yours")
        return reply(RC.SUCCESS, job=job.to_json(results=results))
