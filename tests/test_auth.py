"""Credentials and tokens: cloud mapping, credential choice, caching, refresh, error lines.

The live tests use the real ManagedIdentityCredential (App Service flow) against the emulator's
token endpoint; the cache tests use a stand-in for azure-identity with a fake clock.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.identity import (
    AzureCliCredential,
    CertificateCredential,
    ClientSecretCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from reconciler.errors import AuthError, ConfigError
from reconciler.graph.auth import (
    AUTH_MODES,
    TokenProvider,
    arc_failure,
    authority_host,
    build_credential,
    describe_failure,
    is_azure_arc,
    refresh_at,
    token_scope,
)

CLOUDS = [
    ("https://graph.microsoft.com", "login.microsoftonline.com"),
    ("https://graph.microsoft.us", "login.microsoftonline.us"),
    ("https://dod-graph.microsoft.us/", "login.microsoftonline.us"),
    ("https://microsoftgraph.chinacloudapi.cn", "login.chinacloudapi.cn"),
    ("http://127.0.0.1:8123", "login.microsoftonline.com"),
]
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
APP = "00000000-0000-0000-0000-0000000000aa"


# -- clouds -------------------------------------------------------------------------------


@pytest.mark.parametrize(("graph_url", "authority"), CLOUDS)
def test_authority_host_per_cloud(graph_url: str, authority: str) -> None:
    assert authority_host(graph_url) == authority


@pytest.mark.parametrize(
    ("graph_url", "scope"),
    [
        ("https://graph.microsoft.com", "https://graph.microsoft.com/.default"),
        ("https://graph.microsoft.us/", "https://graph.microsoft.us/.default"),
        ("https://dod-graph.microsoft.us", "https://dod-graph.microsoft.us/.default"),
        (
            "https://microsoftgraph.chinacloudapi.cn",
            "https://microsoftgraph.chinacloudapi.cn/.default",
        ),
    ],
)
def test_token_scope_per_cloud(graph_url: str, scope: str) -> None:
    assert token_scope(graph_url) == scope


# -- building credentials -----------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate with its private key, PEM, as an app registration uses."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "photosync-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "app.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    return path


def test_build_managed_identity_system_and_user_assigned() -> None:
    assert isinstance(
        build_credential("managed-identity", graph_url="https://graph.microsoft.com"),
        ManagedIdentityCredential,
    )
    assert isinstance(
        build_credential("managed-identity", graph_url="https://graph.microsoft.us", client_id=APP),
        ManagedIdentityCredential,
    )


@pytest.mark.parametrize(("graph_url", "authority"), CLOUDS[:4])
def test_build_client_secret_uses_the_cloud_authority(graph_url: str, authority: str) -> None:
    credential = build_credential(
        "client-secret", graph_url=graph_url, tenant_id=TENANT, client_id=APP, client_secret="s3"
    )
    assert isinstance(credential, ClientSecretCredential)
    assert authority in _authority_of(credential)


def test_build_certificate(certificate: Path) -> None:
    credential = build_credential(
        "certificate",
        graph_url="https://microsoftgraph.chinacloudapi.cn",
        tenant_id=TENANT,
        client_id=APP,
        certificate_path=str(certificate),
    )
    assert isinstance(credential, CertificateCredential)
    assert "login.chinacloudapi.cn" in _authority_of(credential)


def test_build_azure_cli_and_default() -> None:
    url = "https://graph.microsoft.com"
    assert isinstance(build_credential("azure-cli", graph_url=url), AzureCliCredential)
    assert isinstance(
        build_credential("default", graph_url=url, client_id=APP), DefaultAzureCredential
    )


def _authority_of(credential: Any) -> str:
    # azure-identity keeps the authority on its MSAL client wrapper; private, but the only
    # offline evidence that the national-cloud host was passed through.
    return str(getattr(credential, "_authority", ""))


@pytest.mark.parametrize(
    ("mode", "given", "missing"),
    [
        ("client-secret", {"client_id": APP, "client_secret": "x"}, "tenant_id"),
        ("client-secret", {"tenant_id": TENANT, "client_secret": "x"}, "client_id"),
        ("client-secret", {"tenant_id": TENANT, "client_id": APP}, "client_secret"),
        ("certificate", {"tenant_id": TENANT, "client_id": APP}, "certificate_path"),
        ("certificate", {"client_id": APP, "certificate_path": "/x.pem"}, "tenant_id"),
    ],
)
def test_missing_inputs_name_the_setting(mode: str, given: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_credential(mode, graph_url="https://graph.microsoft.com", **given)
    assert caught.value.setting == missing
    assert mode in str(caught.value)


def test_unreadable_certificate_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_credential(
            "certificate",
            graph_url="https://graph.microsoft.com",
            tenant_id=TENANT,
            client_id=APP,
            certificate_path=str(tmp_path / "absent.pem"),
        )
    assert caught.value.setting == "certificate_path"


def test_unknown_mode_lists_the_modes() -> None:
    with pytest.raises(ConfigError) as caught:
        build_credential("kerberos", graph_url="https://graph.microsoft.com")
    assert caught.value.setting == "auth"
    assert all(mode in str(caught.value) for mode in AUTH_MODES)


# -- error lines --------------------------------------------------------------------------


def test_describe_failure_is_one_redacted_line() -> None:
    jwt = "eyJ0eXAiOiJKV1QifQ.eyJhdWQiOiJncmFwaCJ9.c2lnbmF0dXJl"
    exc = RuntimeError(
        f"Token request error:\n (invalid_grant) bad\n token {jwt} Bearer abc.def "
        'client_secret="hunter2" \nVisit https://aka.ms/troubleshoot to troubleshoot.'
    )
    line = describe_failure(exc)
    assert "\n" not in line
    for secret in (jwt, "abc.def", "hunter2", "aka.ms"):
        assert secret not in line
    assert line.startswith("token request error: (invalid_grant) bad")


def test_refresh_at_five_minutes_early_or_half_way_for_short_tokens() -> None:
    assert refresh_at(0, 3600) == 3300
    assert refresh_at(100, 110) == 105
    assert refresh_at(0, 600) == 300


# -- TokenProvider with a stand-in credential ----------------------------------------------


class StubCredential:
    """Issues tok-1, tok-2, ...; or the same cached token, as MSAL does before expiry."""

    def __init__(self, clock: list[float], lifetime: float, sticky: bool = False) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.sticky = sticky
        self.calls = 0
        self.fail: Exception | None = None

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == ("https://graph.microsoft.com/.default",)
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        n = 1 if self.sticky else self.calls
        return AccessToken(f"tok-{n}", int(self.clock[0] + self.lifetime))


def _provider(credentials: list[StubCredential], clock: list[float]) -> TokenProvider:
    made = iter(credentials)
    return TokenProvider(
        lambda: next(made),
        mode="managed-identity",
        scope="https://graph.microsoft.com/.default",
        clock=lambda: clock[0],
    )


def test_token_is_cached_until_the_refresh_point() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, lifetime=3600)
    tokens = _provider([stub], clock)
    assert tokens.token() == tokens.token() == "tok-1"
    clock[0] += 3299
    assert tokens.token() == "tok-1"
    clock[0] += 2
    assert tokens.token() == "tok-2"
    assert stub.calls == 2


def test_short_tokens_refresh_half_way() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, lifetime=10)
    tokens = _provider([stub], clock)
    tokens.token()
    clock[0] += 4.9
    assert tokens.token() == "tok-1"
    clock[0] += 0.2
    assert tokens.token() == "tok-2"


def test_single_flight_under_concurrency() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, lifetime=3600)
    tokens = _provider([stub], clock)
    start = threading.Barrier(8)
    got: list[str] = []

    def worker() -> None:
        start.wait()
        got.append(tokens.token())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert got == ["tok-1"] * 8 and stub.calls == 1


def test_refresh_after_401_gets_a_new_token() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, lifetime=3600)
    tokens = _provider([stub], clock)
    assert tokens.refresh(tokens.token()) == "tok-2"
    assert tokens.refresh("tok-1") == "tok-2"  # another thread already refreshed


def test_refresh_rebuilds_a_credential_that_re_serves_the_rejected_token() -> None:
    clock = [1000.0]
    sticky = StubCredential(clock, lifetime=3600, sticky=True)
    fresh = StubCredential(clock, lifetime=3600)
    fresh.calls = 1  # its first token will be tok-2
    tokens = _provider([sticky, fresh], clock)
    assert tokens.refresh(tokens.token()) == "tok-2"
    assert tokens.fetches == 3


def test_refresh_gives_up_when_even_a_new_credential_repeats_the_token() -> None:
    clock = [1000.0]
    tokens = _provider([StubCredential(clock, 3600, sticky=True) for _ in range(2)], clock)
    with pytest.raises(AuthError, match="managed-identity"):
        tokens.refresh(tokens.token())


def test_failed_early_refresh_keeps_the_valid_token() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, lifetime=3600)
    tokens = _provider([stub], clock)
    tokens.token()
    clock[0] += 3400  # inside the refresh window, 200 s of life left
    stub.fail = RuntimeError("endpoint down")
    assert tokens.token() == "tok-1"
    calls = stub.calls
    assert tokens.token() == "tok-1" and stub.calls == calls  # not retried at once
    clock[0] += 180  # 20 s left: not worth using
    with pytest.raises(AuthError, match="endpoint down"):
        tokens.token()


def test_credential_failure_becomes_one_line_naming_mode_and_fix() -> None:
    clock = [1000.0]
    stub = StubCredential(clock, 3600)
    stub.fail = ValueError("No managed identity endpoint found. \nThe Target Azure platform")
    tokens = _provider([stub], clock)
    with pytest.raises(AuthError) as caught:
        tokens.token()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("auth 'managed-identity' failed: no managed identity endpoint found")
    assert "set auth = 'client-secret'" in message


# -- Azure Arc -----------------------------------------------------------------------------
# The Arc flow reads a key file under /var/opt/azcmagent/tokens, which only root can create
# here; these tests run where CI runs them (as root) and never touch a real agent's folder.

ARC_TOKENS = Path("/var/opt/azcmagent/tokens")


def _needs_arc_folder() -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("the Arc flow needs root to write /var/opt/azcmagent/tokens")
    if ARC_TOKENS.parent.exists():
        pytest.skip("an Azure Arc agent's folder is on this machine; leaving it alone")


@pytest.mark.parametrize(
    ("env", "himds", "arc"),
    [
        (
            {"IDENTITY_ENDPOINT": "http://localhost:40342/t", "IMDS_ENDPOINT": "http://x"},
            False,
            True,
        ),
        (
            {"IDENTITY_ENDPOINT": "http://x/msi", "IDENTITY_HEADER": "h", "IMDS_ENDPOINT": "x"},
            False,
            False,
        ),
        ({"IDENTITY_ENDPOINT": "http://x/msi"}, False, False),
        ({}, True, True),
        ({"MSI_ENDPOINT": "http://x"}, True, False),
        ({}, False, False),
    ],
)
def test_is_azure_arc_follows_azure_identity_and_msal(
    env: dict[str, str], himds: bool, arc: bool
) -> None:
    assert is_azure_arc(env, himds) is arc


def test_arc_failure_names_the_fix_only_for_what_it_knows() -> None:
    denied = RuntimeError("AzureArcCredential.get_token failed")
    denied.__context__ = PermissionError(13, "Permission denied")
    assert arc_failure(denied, None) is not None and "himds group" in str(arc_failure(denied, None))
    assert arc_failure(RuntimeError("connection refused"), APP) is None
    assert arc_failure(RuntimeError("did not confirm the user-assigned identity"), None) is None


class LegacyArcAgent:
    """An Azure Arc agent from before user-assigned identities: it challenges with a key file
    like any agent, then issues the machine's system-assigned token whatever client_id asks
    for. No such agent can run here, so this stands in for one (the emulator's agent is a
    current one and honours client_id)."""

    def __init__(self) -> None:
        import http.server
        import json

        from reconciler.emulator.auth import ArcKeyFiles

        keys = ArcKeyFiles()
        self.keys = keys

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                scheme, _, secret = (self.headers.get("Authorization") or "").partition(" ")
                if scheme.lower() != "basic":
                    self._answer(401, {"error": "challenge"}, f"Basic realm={keys.challenge()}")
                elif keys.redeem(secret):
                    self._answer(200, {"access_token": "system-assigned", "expires_in": "3600"})
                else:
                    self._answer(401, {"error": "unauthorized_client"})

            def _answer(self, status: int, body: dict[str, str], realm: str = "") -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if realm:
                    self.send_header("WWW-Authenticate", realm)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.keys.close()


def _arc_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str, imds: str) -> None:
    for name in ("IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint)
    monkeypatch.setenv("IMDS_ENDPOINT", imds)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_client_id_on_an_arc_agent_without_user_assigned_identities_exits_3(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from reconciler.cli import main
    from tests.helpers import write_jpeg

    _needs_arc_folder()
    agent = LegacyArcAgent()
    try:
        _arc_environment(monkeypatch, f"{agent.url}/metadata/identity/oauth2/token", agent.url)
        (tmp_path / "inbox").mkdir()
        write_jpeg(tmp_path / "inbox" / "Jane Doe.jpg")
        run = CliRunner().invoke(
            main,
            [
                "reconcile",
                "--graph-url",
                "https://graph.microsoft.com",
                "--client-id",
                APP,
                "--inbox-dir",
                str(tmp_path / "inbox"),
                "--completed-dir",
                str(tmp_path / "completed"),
                "--failed-dir",
                str(tmp_path / "failed"),
                "--database-url",
                f"sqlite:///{tmp_path / 'photosync.db'}",
                "--settle-seconds",
                "0",
            ],
        )
    finally:
        agent.close()
    assert run.exit_code == 3, run.output
    assert "Azure Arc offers only the system-assigned identity" in run.output
    assert "remove client_id" in run.output
    assert (tmp_path / "inbox" / "Jane Doe.jpg").exists()
    assert not ARC_TOKENS.parent.exists()  # the key files and folders went with the agent


def test_client_id_on_a_current_arc_agent_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arc agents that serve user-assigned identities exist (azure-identity 1.26+ with msal
    1.39+ ask for them and check the answer), so client_id with Arc is not refused up front."""
    from reconciler.emulator import GraphEmulator

    _needs_arc_folder()
    with GraphEmulator() as emu:
        _arc_environment(monkeypatch, emu.arc_env()["IDENTITY_ENDPOINT"], emu.url)
        tokens = TokenProvider(
            lambda: build_credential("managed-identity", graph_url=emu.url, client_id=APP),
            mode="managed-identity",
            scope=token_scope(emu.url),
        )
        assert tokens.token() in emu.issued_tokens
        [_, redeemed] = [r for r in emu.requests() if r.path == "/arc/token"]
        assert redeemed.query["client_id"] == APP
        tokens.close()


def test_an_arc_key_file_this_account_cannot_read_names_the_himds_group(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from reconciler.emulator import GraphEmulator, identity_environment
    from tests.helpers import write_jpeg

    _needs_arc_folder()
    # The agent's folder as a real one is: its owner and group (himds) only. This account is
    # in neither, and without the capabilities that let root ignore file permissions, root
    # is shut out like a service account outside the himds group.
    created = [d for d in (Path("/var/opt"), ARC_TOKENS.parent, ARC_TOKENS) if not d.exists()]
    for folder in created:
        folder.mkdir()
    os.chown(ARC_TOKENS, 65534, 65534)
    ARC_TOKENS.chmod(0o770)
    try:
        with GraphEmulator() as emu:
            emu.tenant.add_user("Jane Doe")
            inbox = tmp_path / "inbox"
            inbox.mkdir()
            write_jpeg(inbox / "Jane Doe.jpg")
            env = identity_environment(os.environ, emu.arc_env())
            env.pop("IDENTITY_HEADER", None)
            done = subprocess.run(
                [
                    "setpriv",
                    "--bounding-set",
                    "-dac_override,-dac_read_search",
                    sys.executable,
                    "-m",
                    "reconciler",
                    "reconcile",
                    "--json",
                    "--graph-url",
                    emu.url,
                    "--inbox-dir",
                    str(inbox),
                    "--completed-dir",
                    str(tmp_path / "completed"),
                    "--failed-dir",
                    str(tmp_path / "failed"),
                    "--database-url",
                    f"sqlite:///{tmp_path / 'photosync.db'}",
                    "--settle-seconds",
                    "0",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert [r.status for r in emu.requests() if r.path == "/arc/token"] == [401]
            assert emu.graph_request_count == 0
    finally:
        for folder in reversed(created):
            folder.rmdir()
    assert done.returncode == 3, done.stderr
    assert "add this account to the himds group (Linux)" in done.stderr
    assert "run as an administrator (Windows)" in done.stderr
    assert "Azure VM with a managed identity" not in done.stderr  # not the generic hint
    assert (inbox / "Jane Doe.jpg").exists()
