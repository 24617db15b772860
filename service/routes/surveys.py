"""`/surveys`: create, read and complete surveys (SPEC 7)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.events import Survey
from service import surveys
from service.auth import client_id
from service.bodies import validated
from service.errors import Conflict, NotFound
from service.routing import ApiRoute, Operation
from service.schemas import SurveyCreate, SurveyUpdate

TAG = "surveys"


def _wake_poller(request: Request) -> None:
    request.app.state.wakeup.notify()


async def create_survey(request: Request) -> JSONResponse:
    body = await validated(request, SurveyCreate)
    survey = await surveys.create_survey(
        request.app.state.db, client_id(request), patient_id=body.patient_id, answers=body.answers
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


async def update_survey(request: Request) -> JSONResponse:
    body = await validated(request, SurveyUpdate)
    try:
        survey = await surveys.complete_survey(
            request.app.state.db,
            client_id(request),
            request.path_params["survey_id"],
            answers=body.answers,
        )
    except surveys.SurveyAlreadyCompleted:
        raise Conflict("the survey is already completed") from None
    if survey is None:
        raise NotFound("no such survey")
    _wake_poller(request)
    return JSONResponse(survey)


routes = [
    ApiRoute(
        "/surveys",
        create_survey,
        method="POST",
        operation=Operation(
            "Create a survey (emits survey_created)", TAG, {201: Survey}, SurveyCreate
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
        ),
    ),
]
