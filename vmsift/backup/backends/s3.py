"""A repository in S3-compatible object storage (AWS S3, MinIO, Ceph RGW), through boto3.

Location: ``s3:ENDPOINT/BUCKET[/PREFIX]``, e.g. ``s3:https://s3.eu-west-1.amazonaws.com/
backups/vmsift`` or ``s3:http://127.0.0.1:9000/backups`` (no scheme: https). Credentials the
AWS way (environment, ``~/.aws`` profiles, instance roles); ``AWS_PROFILE`` and
``AWS_DEFAULT_REGION`` apply. Keys mirror the local layout under PREFIX. A put asks the
server not to replace an existing key (``If-None-Match: *``) and falls back to a check first
where the server does not support that; either way a repeated put of an object is harmless,
as names are content hashes. boto3's own retries are off: `retry.RetryBackend` is the one
place that repeats calls, on 5xx answers, throttling and dropped connections.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from ...errors import MissingObjectError, RepositoryError
from . import KINDS, Backend, TransientError

_LOCATION = re.compile(r"^s3:(?:(https?)://)?([^/]+)/([^/]+)(?:/(.*?))?/?$")
_TRANSIENT_CODES = {"500", "502", "503", "504", "InternalError", "ServiceUnavailable",
                    "SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"}


def parse_location(location: str) -> tuple[str, str, str]:
    """(endpoint URL, bucket, prefix) of an ``s3:`` location."""
    m = _LOCATION.match(location)
    if not m:
        raise RepositoryError("an S3 location is s3:ENDPOINT/BUCKET[/PREFIX]", source=location)
    scheme, host, bucket, prefix = m[1] or "https", m[2], m[3], (m[4] or "").strip("/")
    return f"{scheme}://{host}", bucket, prefix


class S3Backend(Backend):
    def __init__(self, location: str):
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise RepositoryError("S3 repositories need boto3: pip install 'vmsift[s3]'",
                                  source=location) from None
        self._exc = botocore.exceptions
        self._errors = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
        self.location = location
        self.endpoint, self.bucket, self.prefix = parse_location(location)
        config = botocore.config.Config(retries={"total_max_attempts": 1, "mode": "standard"},
                                        connect_timeout=10, read_timeout=60,
                                        s3={"addressing_style": "path"})
        self.client = boto3.session.Session().client("s3", endpoint_url=self.endpoint,
                                                     config=config)
        self._conditional = True

    def _key(self, kind: str, name: str) -> str:
        if kind not in KINDS or not name or "/" in name or name.startswith("."):
            raise RepositoryError(f"bad object name {kind}/{name}", source=self.location)
        if kind == "config":
            rel = "config"
        elif kind == "data":
            rel = f"data/{name[:2]}/{name}"
        else:
            rel = f"{kind}/{name}"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _fail(self, e: Exception, what: str) -> Exception:
        """The vmsift error for a boto3 failure."""
        if isinstance(e, self._exc.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            if code in _TRANSIENT_CODES or status in _TRANSIENT_CODES:
                return TransientError(f"{what}: {code or status} {err.get('Message', '')}")
            if code in ("NoSuchKey", "404", "NotFound"):
                return MissingObjectError(f"{what}: not there", source=self.location)
            if code == "NoSuchBucket":
                return RepositoryError(f"bucket {self.bucket!r} does not exist",
                                       source=self.location)
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return RepositoryError(f"{what}: access denied ({code}); check the "
                                       "credentials and the bucket's policy",
                                       source=self.location)
            return RepositoryError(f"{what}: {code} {err.get('Message', '')}".strip(),
                                   source=self.location)
        if isinstance(e, (self._exc.EndpointConnectionError, self._exc.ConnectionClosedError,
                          self._exc.ReadTimeoutError, self._exc.ConnectTimeoutError,
                          self._exc.ResponseStreamingError)):
            return TransientError(f"{what}: {e}")
        if isinstance(e, self._exc.NoCredentialsError):
            return RepositoryError("no S3 credentials (set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)", source=self.location)
        return TransientError(f"{what}: {e}")  # other BotoCoreErrors: network trouble

    def create(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            listed = self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1,
                                                 Prefix=f"{self.prefix}/" if self.prefix else "")
        except self._errors as e:
            if isinstance(e, self._exc.ClientError) and \
                    str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise RepositoryError(f"bucket {self.bucket!r} does not exist",
                                      source=self.location) from None
            raise self._fail(e, "open the bucket") from None
        if listed.get("KeyCount", 0):
            raise RepositoryError("the bucket (or prefix) is not empty; a new repository "
                                  "needs an empty one", source=self.location)

    def list(self, kind: str) -> Iterator[tuple[str, int]]:
        if kind == "config":
            if self.exists("config", "config"):
                yield "config", 0
            return
        if kind not in KINDS:
            raise RepositoryError(f"bad object kind {kind}", source=self.location)
        top = f"{self.prefix}/{kind}/" if self.prefix else f"{kind}/"
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=top)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"].rsplit("/", 1)[1]
                    if name and not name.startswith("."):
                        yield name, obj["Size"]
        except self._errors as e:
            raise self._fail(e, f"list {kind}") from None

    def get(self, kind: str, name: str, offset: int = 0, length: int | None = None) -> bytes:
        args = {"Bucket": self.bucket, "Key": self._key(kind, name)}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            if length == 0:
                return b""
            args["Range"] = f"bytes={offset}-{end}"
        try:
            body = self.client.get_object(**args)["Body"].read()
        except self._errors as e:
            raise self._fail(e, f"get {kind}/{name}") from None
        if length is not None and len(body) != length:
            raise RepositoryError(f"{kind}/{name} gave {len(body)} bytes at {offset}, "
                                  f"{length} were asked for (the object is shorter)",
                                  source=self.location, offset=offset)
        return body

    def put(self, kind: str, name: str, data: bytes) -> None:
        key = self._key(kind, name)
        try:
            if self._conditional:
                try:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                           IfNoneMatch="*")
                    return
                except self._exc.ClientError as e:
                    code = str(e.response.get("Error", {}).get("Code"))
                    if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                        return  # already there: objects are immutable
                    if code not in ("NotImplemented", "501", "InvalidArgument"):
                        raise
                    self._conditional = False  # an older server: check, then put
                except self._exc.ParamValidationError:
                    self._conditional = False
            if not self.exists(kind, name):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except self._errors as e:
            raise self._fail(e, f"put {kind}/{name}") from None

    def delete(self, kind: str, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(kind, name))
        except self._errors as e:
            raise self._fail(e, f"delete {kind}/{name}") from None

    def exists(self, kind: str, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(kind, name))
            return True
        except self._errors as e:
            err = self._fail(e, f"stat {kind}/{name}")
            if isinstance(err, MissingObjectError):
                return False
            raise err from None
