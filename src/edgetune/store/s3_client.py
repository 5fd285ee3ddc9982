"""The boto3 S3 client of an s3:// repository, and the one place S3 failures become
edgetune errors: a missing bucket, missing or refused credentials are FailedPrecondition (the
operator must fix the setup), anything else (an endpoint that does not answer, throttling,
a 5xx) Unavailable (it may pass), each naming the bucket; never a traceback to a client."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgetune.errors import FailedPrecondition, Unavailable, quoted

log = logging.getLogger(__name__)

DENIED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
"""S3 error codes of refused credentials or policies."""
TAKEN = {"PreconditionFailed", "ConditionalRequestConflict"}
"""What a conditional write answers when the key exists (412) or another conditional
write to it is in flight (409): either way the key is not ours."""


def s3_client() -> Any:
    """A boto3 S3 client configured from the standard AWS_* variables, with bounded
    timeouts and retries so an unreachable endpoint fails a call in seconds, not minutes.

    :raises FailedPrecondition: boto3 is not installed.
    """
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise FailedPrecondition(
            "repository_url s3://... needs boto3: pip install 'edgetune[s3]'"
        ) from None
    config = Config(
        connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"}
    )
    # A session of its own: boto3's default session is not thread-safe, its clients are.
    return boto3.session.Session().client("s3", config=config)


@contextmanager
def s3_errors(bucket: str, what: str) -> Iterator[None]:
    """Turn what boto3 raises in the block into edgetune errors naming the bucket and what
    was being done (the client reads the message; the server log gets boto3's own)."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        log.warning("%s: %s", what, exc)
        if code == "NoSuchBucket":
            raise FailedPrecondition(
                f"{what}: bucket {bucket!r} does not exist (repository_url)"
            ) from None
        if code in DENIED or code == "403":
            raise FailedPrecondition(
                f"{what}: bucket {bucket!r} refused access ({quoted(code, 40)}): "
                "check the AWS_* credentials and the bucket policy"
            ) from None
        raise Unavailable(f"{what}: bucket {bucket!r} answered {quoted(code, 40)}") from None
    except NoCredentialsError:
        raise FailedPrecondition(
            f"{what}: no AWS credentials for bucket {bucket!r}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, a profile or a role"
        ) from None
    except BotoCoreError as exc:
        log.warning("%s: %s", what, exc)
        raise Unavailable(
            f"{what}: cannot reach bucket {bucket!r} ({type(exc).__name__}): check "
            "AWS_ENDPOINT_URL, the network and the credentials"
        ) from None


def error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError ("" for anything else)."""
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(code or status or "")
