"""`/users/{id}/photo` and `/users/{id}/photo/$value` (docs/graph-behaviour.md, "Uploading a
photo" and "Reading a photo")."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

from PIL import Image

from reconciler.emulator.faults import Faults, WriteLimiter
from reconciler.emulator.tenant import Tenant, UserRecord
from reconciler.emulator.users import not_found
from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    bad_request,
    json_response,
    method_not_allowed,
)

MAX_PHOTO_BYTES = 4 * 1024 * 1024
MIN_SIDE = 48
ACCEPTED_TYPES = frozenset({"image/jpeg", "image/png"})
_PROFILE_EXCEPTION = "Exception of type 'Microsoft.Fast.Profile.Core.Exception.{}' was thrown."
# The messages Graph sends with these codes (docs/graph-behaviour.md). Graph documents no code
# for a write the tenant's photo update settings forbid; any other code stands in for it here.
_MESSAGES = {
    "MailboxNotHostedInExchangeOnline": (
        "Mailbox is hosted by an on-premise or non-Exchange server, which is not supported."
    ),
    "ErrorItemNotFound": "The specified object was not found in the store.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "Authorization_RequestDenied": "Insufficient privileges to complete the operation.",
    "ImageNotFound": _PROFILE_EXCEPTION.format("ImageNotFoundException"),
}
_POLICY_MESSAGE = "Updating the profile photo is not allowed by the organization's photo settings."


def photo_error(status: int, code: str) -> ApiError:
    """The error Graph answers with `code` (Faults.photo_errors)."""
    return ApiError(status, code, _MESSAGES.get(code, _POLICY_MESSAGE))


def decode_image(data: bytes) -> tuple[tuple[int, int], str]:
    """(size, MIME type) of an image that fully decodes; Graph refuses anything less."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size, kind = image.size, Image.MIME.get(image.format or "", "application/octet-stream")
            # Decoding at 1/8 scale still reads every byte of a JPEG, so corruption shows,
            # at a fraction of the cost of a full decode.
            image.draft("RGB", (max(size[0] // 8, 1), max(size[1] // 8, 1)))
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise bad_request(f"The photo could not be read as an image: {exc}", "BadRequest") from exc
    return size, kind


class PhotoRoutes:
    def __init__(
        self,
        tenant: Tenant,
        faults: Faults,
        limiter: WriteLimiter,
        base_url: Callable[[], str],
    ) -> None:
        self._tenant = tenant
        self._faults = faults
        self._limiter = limiter
        self._base_url = base_url

    def handle(self, req: EmuRequest, key: str, *, value: bool) -> EmuResponse:
        method = req.method
        if method == "GET":
            record = self._user(key, read=True)
            return self._read_bytes(record) if value else self._read_metadata(record)
        if value and method in {"PUT", "PATCH", "DELETE"}:
            if len(req.body) > MAX_PHOTO_BYTES:  # refused at the front door, before any work
                raise ApiError(
                    413, "RequestEntityTooLarge", "The maximum request length supported is 4MB."
                )
            self._limiter.admit()
            record = self._user_for_write(key)
            return self._delete(record) if method == "DELETE" else self._write(req, record)
        raise method_not_allowed()

    def _user(self, key: str, *, read: bool = False) -> UserRecord:
        record = self._tenant.resolve(key)
        if record is None:
            raise not_found(key)
        injected = self._faults.photo_errors.get(record.id)
        # A tenant's photo update policy (any code without a message of its own stands in
        # for it) forbids writes, not reads: docs/graph-behaviour.md.
        if injected is not None and not (read and injected[1] not in _MESSAGES):
            raise photo_error(*injected)
        return record

    def _user_for_write(self, key: str) -> UserRecord:
        record = self._user(key)
        if record.id in self._faults.delete_user_on_photo_write:
            self._tenant.delete_user(record.id)
            raise not_found(key)
        if record.id in self._faults.fail_photo_users:
            raise ApiError(500, "generalException", "General exception while processing.")
        return record

    def _write(self, req: EmuRequest, record: UserRecord) -> EmuResponse:
        content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in ACCEPTED_TYPES:
            raise bad_request(
                f"Content-Type '{content_type}' is not supported for a profile photo; "
                "send image/jpeg or image/png.",
                "BadRequest",
            )
        size, detected = decode_image(req.body)
        if min(size) < MIN_SIDE:
            raise bad_request(
                _PROFILE_EXCEPTION.format("ProfileBadRequestException"), "ValidationWidthTooSmall"
            )
        self._tenant.store_photo(record.id, req.body, content_type, size, detected)
        if self._faults.after_photo_stored is not None:
            self._faults.after_photo_stored(record.id)
        return EmuResponse(200)

    def _delete(self, record: UserRecord) -> EmuResponse:
        if not self._tenant.delete_photo(record.id):
            raise _image_not_found()
        if self._faults.after_photo_deleted is not None:
            self._faults.after_photo_deleted(record.id)
        return EmuResponse(204)

    def _read_bytes(self, record: UserRecord) -> EmuResponse:
        photo = self._tenant.photo(record.id)
        if photo is None:
            raise _image_not_found()
        return EmuResponse(200, {"Content-Type": photo.content_type}, photo.data)

    def _read_metadata(self, record: UserRecord) -> EmuResponse:
        photo = self._tenant.photo(record.id)
        if photo is None:
            raise _image_not_found()
        etag = photo.etag or f'"{hashlib.sha256(photo.data).hexdigest()[:8].upper()}"'
        return json_response(
            {
                "@odata.context": (
                    f"{self._base_url()}/v1.0/$metadata#users('{record.id}')/photo/$entity"
                ),
                "@odata.mediaContentType": photo.content_type,
                "@odata.mediaEtag": etag,
                # Entra-stored photos report "default" rather than a size
                # (docs/graph-behaviour.md, "Reading a photo").
                "id": "default",
                "width": photo.width,
                "height": photo.height,
            }
        )


def _image_not_found() -> ApiError:
    return ApiError(404, "ImageNotFound", _PROFILE_EXCEPTION.format("ImageNotFoundException"))
