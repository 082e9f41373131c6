"""Fixtures shared by every test: a live Graph emulator and real generated images."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from reconciler.graph.emulator import GraphEmulator


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[GraphEmulator]:
    """A running emulator, with the environment pointing ManagedIdentityCredential at it."""
    with GraphEmulator() as emu:
        for name in (
            "IMDS_ENDPOINT",
            "MSI_ENDPOINT",
            "MSI_SECRET",
            "IDENTITY_SERVER_THUMBPRINT",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
            "AZURE_CLIENT_ID",
        ):
            monkeypatch.delenv(name, raising=False)
        for name, value in emu.managed_identity_env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield emu


def jpeg_bytes(
    size: tuple[int, int] = (200, 200),
    color: tuple[int, int, int] = (200, 30, 30),
    quality: int = 90,
) -> bytes:
    """A real JPEG of one colour; distinct colours give distinct bytes."""
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def write_jpeg(
    path: Path, size: tuple[int, int] = (200, 200), color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    data = jpeg_bytes(size, color)
    path.write_bytes(data)
    return data
