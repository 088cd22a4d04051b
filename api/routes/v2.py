"""/v2: the Open Inference Protocol (KServe V2) REST API over the registered models.

`{name}` is a registered model of the caller's tenant (auth as /v1); `{version}` a version
number or an alias; no version: the latest. Errors are the protocol's `{"error": "..."}`
(api.errors answers that shape under /v2). Tensors: api.services.inference.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.db import read
from api.deps import CacheDep, DirectoryDep, TenantDep
from api.directory import ModelDirectory, Ref
from api.fast_predict import INLINE_BODY_BYTES
from api.services import inference, models, predict
from api.services.predict import LoadedModel, ModelCache

# Not in /docs: the protocol has its own specification (KServe's open_inference_rest.yaml),
# whose error shape ({"error": "..."}) is not this API's.
router = APIRouter(prefix="/v2", tags=["open inference protocol"], include_in_schema=False)
HEADER_LENGTH = "Inference-Header-Content-Length"


def _ref(version: str | None) -> Ref:
    return int(version) if version is not None and version.isdigit() else version


async def _model(tenant: str, cache: ModelCache, directory: ModelDirectory, name: str,
                 version: str | None) -> tuple[LoadedModel, int]:
    ref = _ref(version)
    found = directory.lookup(tenant, name, ref)  # memory; the database only when unknown
    if found is None:
        found = await run_in_threadpool(directory.resolve, tenant, name, ref)
    job_id, number = found
    loaded = predict.cached(cache, job_id=job_id, tenant=tenant)
    if loaded is None:
        loaded = await run_in_threadpool(
            lambda: predict.cached_model(job_id=job_id, tenant=tenant, cache=cache))
    return loaded, number


@router.get("/health/live", summary="The server is live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="The server can answer (its database is reachable)")
def ready() -> dict[str, bool]:
    read(models.generation)
    return {"ready": True}


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> dict[str, Any]:
    return {"name": "taas", "version": request.app.version,
            "extensions": ["binary_tensor_data"]}


@router.get("/models/{name}", summary="Model metadata (latest version)")
@router.get("/models/{name}/versions/{version}", summary="Model metadata")
async def model_metadata(name: str, tenant: TenantDep, cache: CacheDep,
                         directory: DirectoryDep, version: str | None = None) -> dict[str, Any]:
    loaded, _ = await _model(tenant, cache, directory, name, version)
    return await run_in_threadpool(lambda: inference.metadata(
        loaded, name=name, versions=directory.versions(tenant, name)))


@router.get("/models/{name}/ready", summary="Model readiness (latest version)")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness")
async def model_ready(name: str, tenant: TenantDep, cache: CacheDep, directory: DirectoryDep,
                      version: str | None = None) -> dict[str, Any]:
    await _model(tenant, cache, directory, name, version)  # 404 unless there and loadable
    return {"name": name, "ready": True}


@router.post("/models/{name}/infer", summary="Inference (latest version)")
@router.post("/models/{name}/versions/{version}/infer", summary="Inference")
async def infer(name: str, request: Request, tenant: TenantDep, cache: CacheDep,
                directory: DirectoryDep, version: str | None = None) -> Response:
    raw = await request.body()
    loaded, number = await _model(tenant, cache, directory, name, version)
    header = request.headers.get(HEADER_LENGTH)
    if len(raw) > INLINE_BODY_BYTES:
        body, header_length = await run_in_threadpool(_infer, loaded, raw, header, name, number)
    else:  # small and quick (api.fast_predict's rule): on the event loop, no thread hop
        parsed, x = inference.parse(raw, header)
        results = inference.outputs_of(loaded, x) if loaded.is_quick(len(x)) else \
            await run_in_threadpool(inference.outputs_of, loaded, x)
        body, header_length = inference.response(parsed, name=name, version=number,
                                                 results=results)
    predict.counted(request.scope["state"], loaded, {"model": name, "version": number})
    headers = {} if header_length is None else {HEADER_LENGTH: str(header_length)}
    media = "application/json" if header_length is None else "application/octet-stream"
    return Response(body, media_type=media, headers=headers)


def _infer(loaded: LoadedModel, raw: bytes, header_length: str | None, name: str,
           version: int) -> tuple[bytes, int | None]:
    request, x = inference.parse(raw, header_length)
    return inference.response(request, name=name, version=version,
                              results=inference.outputs_of(loaded, x))
