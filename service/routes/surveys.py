"""`/surveys`: create, read and complete surveys (SPEC 7)."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.database import WriteUnit
from core.events import Survey
from core.tracing import current_traceparent
from service import idempotency, surveys
from service.auth import client_id
from service.bodies import validated
from service.errors import Conflict, NotFound
from service.idempotency import Answer, Scope, idempotency_key, request_hash
from service.routing import ApiRoute, Operation
from service.schemas import SurveyCreate, SurveyUpdate

TAG = "surveys"


def _wake_poller(request: Request) -> None:
    request.app.state.wakeup.notify()


async def _once(request: Request, scope: Scope, work: WriteUnit[Answer]) -> Response:
    """The answer of `work` run once for `scope`'s key (see `service.idempotency`)."""
    answer, replayed = await idempotency.once(request.app.state.db, scope, work)
    if not replayed and answer.status_code < 300:
        _wake_poller(request)
    return answer.response(replayed=replayed)


def _scope(request: Request, route: str, key: str, body: BaseModel) -> Scope:
    return Scope(client_id(request), route, key, request_hash(body.model_dump(mode="json")))


async def create_survey(request: Request) -> Response:
    key = idempotency_key(request)
    body = await validated(request, SurveyCreate)
    if key is not None:
        scope = _scope(request, "POST /api/v2/surveys", key, body)
        work = surveys.creating(
            scope.client_id,
            patient_id=body.patient_id,
            answers=body.answers,
            traceparent=current_traceparent(),
        )
        return await _once(request, scope, work)
    survey = await surveys.create_survey(
        request.app.state.db,
        client_id(request),
        patient_id=body.patient_id,
        answers=body.answers,
        traceparent=current_traceparent(),
    )
    _wake_poller(request)
    return JSONResponse(survey, status_code=201)


async def get_survey(request: Request) -> JSONResponse:
    survey = await surveys.get_survey(
        request.app.state.db, client_id(request), request.path_params["survey_id"]
    )
    if survey is None:
        raise NotFound("no such survey")
    return JSONResponse(survey)


async def update_survey(request: Request) -> Response:
    key = idempotency_key(request)
    body = await validated(request, SurveyUpdate)
    if key is not None:
        survey_id = request.path_params["survey_id"]
        scope = _scope(request, f"PATCH /api/v2/surveys/{survey_id}", key, body)
        work = surveys.completing(
            scope.client_id, survey_id, answers=body.answers, traceparent=current_traceparent()
        )
        return await _once(request, scope, work)
    try:
        survey = await surveys.complete_survey(
            request.app.state.db,
            client_id(request),
            request.path_params["survey_id"],
            answers=body.answers,
            traceparent=current_traceparent(),
        )
    except surveys.SurveyAlreadyCompleted:
        raise Conflict(surveys.ALREADY_COMPLETED) from None
    if survey is None:
        raise NotFound(surveys.NO_SURVEY)
    _wake_poller(request)
    return JSONResponse(survey)


routes = [
    ApiRoute(
        "/surveys",
        create_survey,
        method="POST",
        operation=Operation(
            "Create a survey (emits survey_created)",
            TAG,
            {201: Survey},
            SurveyCreate,
            idempotent=True,
        ),
    ),
    ApiRoute(
        "/surveys/{survey_id:id}",
        get_survey,
        method="GET",
        operation=Operation("One survey", TAG, {200: Survey}, errors=(404,)),
    ),
    ApiRoute(
        "/surveys/{survey_id:id}",
        update_survey,
        method="PATCH",
        operation=Operation(
            "Complete a survey (emits survey_finished)",
            TAG,
            {200: Survey},
            SurveyUpdate,
            errors=(404, 409),
            idempotent=True,
        ),
    ),
]
