"""
Inference Endpoints handler of a PIM model, staged as `handler.py` at the root of the model repository.

The Inference Toolkit imports this file from the repository folder, builds `EndpointHandler(path=<that folder>)` once
and calls it with each request: `{"inputs": PIL.Image.Image}` for an image body (`Content-Type: image/*`), the parsed
JSON for a JSON body, where `inputs` is a base64-encoded image file. An optional `"parameters": {"top_k": k,
"function_to_apply": "softmax"}` follows the `image-classification` task specification (checked: `top_k` a positive
integer, `function_to_apply` `"softmax"`, `"sigmoid"` or `"none"`; anything else is a `ValueError`, a 400). The
answer is the task's `[{"label": str, "score": float}, ...]`, best first.

This file imports nothing of the `modeling_pim` package: the model's code comes from the repository itself
(`trust_remote_code=True`), and the repository's `requirements.txt` installs the transformers and timm versions it
needs (the toolkit's own transformers is older). The pipeline is the repository's `pipeline_pim.py`
(`custom_pipelines` in its `config.json`), which converts a base64 image to RGB with the model's own `image_to_rgb`
(16-bit images by their range, transparency onto white); an image body arrives already converted by the toolkit
(`convert("RGB")`), so send such images as base64 JSON.
"""

import base64
import binascii
import io
from typing import Any

import PIL.Image
import torch
from transformers import pipeline


PARAMETERS = ("top_k", "function_to_apply")
# The values of `function_to_apply` the image-classification task takes (transformers' `ClassificationFunction`).
FUNCTIONS_TO_APPLY = ("softmax", "sigmoid", "none")


def open_image(encoded: bytes) -> PIL.Image.Image:
    """
    The bytes of an image file → the opened, fully read image.

    Raises:
        `ValueError`: the bytes are not an image PIL can read.
    """
    try:
        image = PIL.Image.open(io.BytesIO(encoded))
        image.load()
    except Exception as error:  # Any PIL plugin failure means the same thing to the caller: not a readable image.
        raise ValueError(f"'inputs' holds {len(encoded)} bytes that are not an image file ({error}).") from error
    return image


def decode_base64_image(data: str) -> PIL.Image.Image:
    """
    A base64-encoded image file (optionally a `data:image/...;base64,` URL) → the opened image. ASCII whitespace is
    ignored (MIME base64 breaks lines every 76 characters: Python's `base64.encodebytes`, the `base64` command without
    `-w0`); any other character outside the base64 alphabet is refused.

    Raises:
        `ValueError`: `data` is not base64, or the bytes are not an image PIL can read.
    """
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        encoded = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"'inputs' is not a base64-encoded image file: {error}.") from error
    return open_image(encoded)


def check_parameters(parameters: Any) -> dict[str, Any]:
    """
    The `parameters` of a request, checked against the image-classification task specification: `top_k` a positive
    integer (JSON `5`; `"5"` or `0` are refused, `true` too), `function_to_apply` one of `FUNCTIONS_TO_APPLY` (any
    case). `None` means none.

    Raises:
        `ValueError`: `parameters` is not an object, holds an unknown parameter or a value of the wrong type or range;
        the message names the parameter, the value and what is expected (the toolkit answers 400).
    """
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ValueError(f"'parameters' must be an object such as {{\"top_k\": 5}}, got {type(parameters).__name__}.")
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"Unknown parameters {unknown}: image-classification takes {list(PARAMETERS)}.")
    top_k = parameters.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"parameters.top_k must be a positive integer (e.g. 5), got {top_k!r}.")
    function = parameters.get("function_to_apply")
    if function is not None and (not isinstance(function, str) or function.lower() not in FUNCTIONS_TO_APPLY):
        raise ValueError(
            f"parameters.function_to_apply must be one of {', '.join(map(repr, FUNCTIONS_TO_APPLY))}, got {function!r}."
        )
    return parameters


class EndpointHandler:
    """The `image-classification` pipeline of the model in `path`, answering Inference Endpoints requests."""

    def __init__(self, path: str = ""):
        device = 0 if torch.cuda.is_available() else -1
        self.classifier = pipeline("image-classification", model=path, trust_remote_code=True, device=device)

    def __call__(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        """
        Classifies `data["inputs"]`, a `PIL.Image.Image`, image file bytes or a base64 string (never a path or a URL:
        a request must not make the endpoint read its own files or fetch addresses), with `data["parameters"]`.

        Raises:
            `ValueError`: `inputs` is missing or not an image, or a parameter is unknown or invalid
            ([`check_parameters`]; the toolkit answers 400).
        """
        inputs = data.get("inputs")
        parameters = check_parameters(data.get("parameters"))
        if isinstance(inputs, str):
            inputs = decode_base64_image(inputs)
        elif isinstance(inputs, (bytes, bytearray)):
            inputs = open_image(bytes(inputs))
        if not isinstance(inputs, PIL.Image.Image):
            raise ValueError(
                f"'inputs' must be an image (an image body, or base64 in a JSON body), got {type(inputs).__name__}."
            )
        predictions = self.classifier(inputs, **parameters)
        return [{"label": prediction["label"], "score": float(prediction["score"])} for prediction in predictions]


__all__ = ["EndpointHandler", "check_parameters", "decode_base64_image", "open_image"]
