"""The Open Inference Protocol (KServe V2) REST API's tensors: requests in, responses out.

JSON tensors (`data` flat or nested, in row-major order) and the binary tensor data extension:
with an `Inference-Header-Content-Length` header the body is that many bytes of JSON followed by
the raw tensors of the inputs whose `parameters.binary_data_size` says how many bytes they take;
outputs are answered the same way when asked for (`binary_data` per output, or
`binary_data_output` for all). A served model has one input, `input` [-1, *input_shape], and
the outputs `output` [-1, *output_shape] (FP32) and, for classifiers, `label` [-1] (INT64).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.errors import InvalidInput
from api.services import predict
from api.services.predict import LoadedModel

DATATYPES: dict[str, np.dtype[Any]] = {name: np.dtype(kind) for name, kind in {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64"}.items()}
NAMES = {dtype: name for name, dtype in DATATYPES.items()}
INPUT = "input"


class InputTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int] = Field(max_length=32)
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


def parse(raw: bytes, header_length: str | None) -> tuple[InferRequest, np.ndarray]:
    """The request and its one input tensor, shaped as it says."""
    size = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > size:
            raise InvalidInput(f"Inference-Header-Content-Length {header_length!r} is not a "
                               f"length within the {size}-byte body")
        size = int(header_length)
    try:
        request = InferRequest.model_validate_json(raw[:size])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None
    names = [each.name for each in request.inputs]
    if names != [INPUT]:
        raise InvalidInput(f"the model has one input, {INPUT!r}; the request has {names}")
    return request, _tensor(request.inputs[0], memoryview(raw)[size:])


def _tensor(tensor: InputTensor, binary: memoryview) -> np.ndarray:
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(f"input {tensor.name!r}: datatype {tensor.datatype!r} is not one of "
                           f"{sorted(DATATYPES)}")
    if any(dim < 0 for dim in tensor.shape):
        raise InvalidInput(f"input {tensor.name!r}: shape {tensor.shape} has a negative size")
    count = math.prod(tensor.shape)
    nbytes = tensor.parameters.get("binary_data_size")
    if nbytes is not None:
        if nbytes != count * dtype.itemsize or len(binary) != nbytes:
            raise InvalidInput(f"input {tensor.name!r}: binary_data_size {nbytes} does not "
                               f"hold {count} {tensor.datatype} values, or the body does not "
                               f"end with them ({len(binary)} bytes after the JSON)")
        return np.frombuffer(binary, dtype=dtype).reshape(tensor.shape)
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"input {tensor.name!r}: data are not {tensor.datatype} values "
                           f"({error})") from None
    if array.size != count:
        raise InvalidInput(f"input {tensor.name!r}: {array.size} values for shape "
                           f"{tensor.shape} ({count})")
    return array.reshape(tensor.shape)


def outputs_of(loaded: LoadedModel, x: np.ndarray) -> dict[str, np.ndarray]:
    outputs, labels = predict.run(loaded, x, loc=("inputs", 0, "data"))
    return {"output": outputs} if labels is None else {"output": outputs, "label": labels}


def response(request: InferRequest, *, name: str, version: int,
             results: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    wanted = request.outputs or [RequestedOutput(name=key) for key in results]
    all_binary = bool(request.parameters.get("binary_data_output", False))
    entries, chunks = [], []
    for output in wanted:
        array = results.get(output.name)
        if array is None:
            raise InvalidInput(f"no output {output.name!r}; the model has {sorted(results)}")
        entry: dict[str, Any] = {"name": output.name, "datatype": NAMES[array.dtype],
                                 "shape": list(array.shape)}
        if output.parameters.get("binary_data", all_binary):
            entry["parameters"] = {"binary_data_size": array.nbytes}
            chunks.append(array.tobytes())
        else:
            entry["data"] = array.ravel()
        entries.append(entry)
    body: dict[str, Any] = {"model_name": name, "model_version": str(version),
                            "outputs": entries}
    if request.id is not None:
        body["id"] = request.id
    header = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return (header + b"".join(chunks), len(header)) if chunks else (header, None)


def metadata(loaded: LoadedModel, *, name: str, versions: list[int]) -> dict[str, Any]:
    """Inputs and outputs with name, datatype and shape (-1: any batch size); the outputs'
    shapes and kinds are those of a one-row forward pass."""
    model_spec = loaded.spec.model
    dtype = "INT64" if model_spec.input_dtype == "int" else "FP32"
    example = np.zeros((1, *model_spec.input_shape),
                       dtype=np.int64 if dtype == "INT64" else np.float32)
    return {"name": name, "versions": [str(v) for v in versions], "platform": "taas_pytorch",
            "inputs": [{"name": INPUT, "datatype": dtype,
                        "shape": [-1, *model_spec.input_shape]}],
            "outputs": [{"name": key, "datatype": NAMES[array.dtype],
                         "shape": [-1, *array.shape[1:]]}
                        for key, array in outputs_of(loaded, example).items()]}
