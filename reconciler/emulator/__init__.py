"""The other side of the wire: a loopback Microsoft Graph and managed-identity token endpoint.

It shares no code with the client in `reconciler.graph`; only `photosync demo`, the
`photosync emulator` command, the tests and the benchmarks use it (docs/architecture.md).
"""

from reconciler.emulator.service import (
    OTHER_IDENTITY_VARIABLES,
    Faults,
    GraphEmulator,
    RecordedRequest,
    StoredPhoto,
    Tenant,
    identity_environment,
)

__all__ = [
    "OTHER_IDENTITY_VARIABLES",
    "Faults",
    "GraphEmulator",
    "RecordedRequest",
    "StoredPhoto",
    "Tenant",
    "identity_environment",
]
