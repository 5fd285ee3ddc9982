"""Run by tests/clients/test_triton.py inside .venv-triton (tritonclient needs protobuf < 7):
talks to an edgetune server with the unchanged Triton client and prints what it saw as JSON.

    .venv-triton/bin/python tests/clients/triton_check.py ADDRESS MODEL TEXT... [--ready-of=NAME]...
"""

import json
import sys

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def main() -> None:
    address, model, *texts = sys.argv[1:]
    others = [t.removeprefix("--ready-of=") for t in texts if t.startswith("--ready-of=")]
    texts = [t for t in texts if not t.startswith("--ready-of=")]
    client = triton.InferenceServerClient(url=address)
    # Readiness first: right after start-up, before any request could have loaded a model.
    ready_of = {name: client.is_model_ready(name) for name in [model, *others]}
    metadata = client.get_model_metadata(model, as_json=True)
    text = triton.InferInput("text", [len(texts), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    outputs = [triton.InferRequestedOutput("labels"), triton.InferRequestedOutput("scores")]
    result = client.infer(model, [text], outputs=outputs)
    errors = {}
    for name, call in {
        "unknown_model": lambda: client.infer("no-such-model", [text]),
        "wrong_datatype": lambda: client.infer(model, [_fp32_text(len(texts))]),
    }.items():
        try:
            call()
            errors[name] = "OK"
        except InferenceServerException as exc:
            errors[name] = exc.status()
    print(
        json.dumps(
            {
                "live": client.is_server_live(),
                "ready": client.is_server_ready(),
                "model_ready": client.is_model_ready(model),
                "ready_of": ready_of,
                "metadata": metadata,
                "labels": [label.decode() for label in result.as_numpy("labels").tolist()],
                "scores": result.as_numpy("scores").tolist(),
                "errors": errors,
            }
        )
    )


def _fp32_text(count: int) -> "triton.InferInput":
    wrong = triton.InferInput("text", [count], "FP32")
    wrong.set_data_from_numpy(np.zeros(count, dtype=np.float32))
    return wrong


if __name__ == "__main__":
    main()
