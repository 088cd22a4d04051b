"""/v1/datasets: upload (JSON, CSV or NPZ body) and read back a dataset's description."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import SessionDep, SettingsDep, TenantDep
from api.errors import PayloadTooLarge
from api.schemas import BODY_ERRORS, V1_ERRORS, DatasetOut, errors
from api.services import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=errors(*V1_ERRORS))

UPLOAD_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["x", "y"], "properties": {
        "x": {"type": "array", "items": {}}, "y": {"type": "array", "items": {}}}},
        "example": {"x": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 1, 1, 0]}},
    "text/csv": {"schema": {"type": "string"},
                 "example": "weight,target\n87,187\n81,174\n"},
    "application/x-npz": {"schema": {"type": "string", "format": "binary"}},
}}}


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing (413) as soon as it passes the limit, chunked bodies included."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("", status_code=201, response_model=DatasetOut, openapi_extra=UPLOAD_DOC,
             responses={200: {"model": DatasetOut, "description": "Already stored: same id."},
                        **errors(*BODY_ERRORS, 422, descriptions={
                            415: "`unsupported_media_type`: not JSON, CSV or NPZ.",
                            422: "`validation_error` or `invalid_input`: the body is not a "
                                 "readable dataset (`loc` names the array at fault)."})},
             summary="Upload a dataset: JSON {x, y}, CSV with a header row, or NPZ with x and y")
async def upload_dataset(
    request: Request, session: SessionDep, tenant: TenantDep, settings: SettingsDep,
    y_columns: Annotated[str | None, Query(
        max_length=2000, description="CSV: comma-separated target columns (default `target`).",
        examples=["target"])] = None,
) -> JSONResponse:
    body = await _read_limited(request, settings.max_dataset_bytes)
    kind, arrays = datasets.parse_upload(
        content_type=request.headers.get("content-type", ""), body=body,
        y_columns=[c.strip() for c in y_columns.split(",")] if y_columns else None)
    dataset, created = await run_in_threadpool(
        lambda: datasets.store_dataset(session, tenant=tenant, kind=kind, arrays=arrays,
                                       max_bytes=settings.max_dataset_bytes))
    out = DatasetOut.model_validate(datasets.dataset_out(dataset))
    return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=errors(404),
            summary="An uploaded dataset's shapes")
def get_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    return datasets.dataset_out(datasets.get_dataset(session, dataset_id=dataset_id,
                                                     tenant=tenant))
