"""`GET /admin/people/photoUpdateSettings`: the tenant's photo update policy.

Read with PeopleSettings.Read.All (or ReadWrite.All) only, which photosync itself is never
granted; `photosync doctor` therefore reads a refusal as "could not check"
(docs/graph-behaviour.md, "Photo updates disabled for the cloud"). `source` comes from
`faults.photo_update_source`: "cloud", or "onPremises" for a tenant whose cloud photo
updates are disabled.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.emulator.auth import token_roles
from reconciler.emulator.faults import Faults
from reconciler.emulator.wire import (
    ApiError,
    EmuRequest,
    EmuResponse,
    json_response,
    method_not_allowed,
)

PHOTO_UPDATE_SETTINGS = "/v1.0/admin/people/photoUpdateSettings"
READ_ROLES = frozenset({"PeopleSettings.Read.All", "PeopleSettings.ReadWrite.All"})


class AdminRoutes:
    def __init__(self, faults: Faults, base_url: Callable[[], str]) -> None:
        self._faults = faults
        self._base_url = base_url

    def photo_update_settings(self, req: EmuRequest) -> EmuResponse:
        if req.method != "GET":
            raise method_not_allowed()
        roles = token_roles(req.header("Authorization"))
        if roles is not None and not READ_ROLES & set(roles):
            raise ApiError(
                403,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
            )
        return json_response(
            {
                "@odata.context": (
                    f"{self._base_url()}/v1.0/$metadata#admin/people/photoUpdateSettings/$entity"
                ),
                "source": self._faults.photo_update_source,
                "allowedRoles": [],
            }
        )
