"""The environment that points azure-identity's ManagedIdentityCredential at a GraphEmulator,
shared by the benchmarks that drive the real credential."""

from __future__ import annotations

from collections.abc import Mapping

# Variables that would steer the credential to another managed-identity flow than the
# emulator's App Service one.
OTHER_IDENTITY_VARS = frozenset(
    {
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "IDENTITY_SERVER_THUMBPRINT",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        "AZURE_CLIENT_ID",
    }
)


def emulator_env(base: Mapping[str, str], identity_env: Mapping[str, str]) -> dict[str, str]:
    """`base` without the other flows' variables, plus the emulator's; loopback only, whatever
    proxy `base` names."""
    env = {k: v for k, v in base.items() if k not in OTHER_IDENTITY_VARS}
    env.update(identity_env)
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env
