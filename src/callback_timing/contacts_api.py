"""``/contacts``: a contact's rights over the HTTP API (see :mod:`callback_timing.privacy`).

- ``GET /contacts/{contact_id}``: everything stored about the contact (outcomes, rankings,
  opt-out), whether it is erased or opted out, and how its best time is found, in plain words
  (the right of access, GDPR Art. 15);
- ``DELETE /contacts/{contact_id}``: erasure (Art. 17): its rows deleted, its pseudonym on
  the forget list;
- ``POST /contacts/{contact_id}/opt_out`` and ``DELETE .../opt_out``: objection to AI timing
  (Art. 21) and its withdrawal.

Behind the API key; without one, only calls from the server's machine are answered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

_ID = re.compile(r"^[^\x00]{1,256}$")


def contacts_app(ranker: Callable[[], object]) -> Starlette:
    """A Starlette app for the routes above; ``ranker()`` returns the service's
    :class:`~callback_timing.online.OnlineRanker` (``None`` while it starts)."""
    import anyio
    from sqlalchemy.exc import SQLAlchemyError
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def call(request, work):
        contact_id = request.path_params["contact_id"].strip()  # as /rank and /outcomes read it
        if not _ID.match(contact_id):
            return error(400, "contact_id: 1 to 256 characters, no NUL")
        service = ranker()
        if service is None:
            return error(503, "the service is starting: try again")
        try:
            return JSONResponse(await anyio.to_thread.run_sync(work, service, contact_id))
        except SQLAlchemyError as exc:
            return error(503, f"the outcome store is unavailable ({type(exc).__name__}): "
                              "nothing was changed, try again")

    async def record(request):
        return await call(request, lambda s, cid: s.contact_record(cid))

    async def erase(request):
        return await call(request, lambda s, cid: {"contact_id": cid, "erased": True,
                                                   "deleted": s.erase(cid)})

    async def opt_out(request):
        if not request.scope.get("raw_path", b"/opt_out").endswith(b"/opt_out"):
            # "x%2Fopt_out": the id itself ends in /opt_out (the path is decoded before routing)
            contact_id = request.path_params["contact_id"] + "/opt_out"
            request.scope["path_params"] = {**request.path_params, "contact_id": contact_id}
            if request.method == "DELETE":
                return await erase(request)
            return error(405, "method: POST /contacts/{id} is not a right of the contact; "
                              "GET (access) or DELETE (erasure)")
        on = request.method == "POST"
        return await call(request, lambda s, cid: {"contact_id": cid, "opted_out": on,
                                                   "changed": s.opt_out(cid, on)})

    return Starlette(routes=[
        Route("/{contact_id:path}/opt_out", opt_out, methods=["POST", "DELETE"]),
        Route("/{contact_id:path}", record, methods=["GET"]),
        Route("/{contact_id:path}", erase, methods=["DELETE"]),
    ])
