"""The client's credentials and the CLI's login: the config file (0600) and
its environment overrides, and the clients and commands against a
controller serving TLS with authentication on."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from tests.support.auth_rig import AuthRig, auth, csr_for
from virtplane_client import AsyncClient, Client, Credentials, RpcError
from virtplane_client.cli import config
from virtplane_client.cli.main import parser, run_command
from virtplane_client.principals import Role

__all__ = ["auth"]


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home" / "virtplane" / "config.toml"
    monkeypatch.setenv("VIRTPLANE_CONFIG", str(path))
    for name in config.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    return path


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    await run_command(parser().parse_args(list(argv)))
    return capsys.readouterr().out


async def test_login_round_trip(
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "token").write_text("vp_secret\n")
    out = await _cli(
        capsys, "login", "--address", "ctl:7000", "--ca", str(tmp_path / "ca.pem"),
        "--token-file", str(tmp_path / "token"),
    )  # fmt: skip
    assert str(config_file) in out and "vp_secret" not in out
    assert _mode(config_file) == 0o600
    loaded = config.load()
    assert (loaded.address, loaded.ca, loaded.token) == (
        "ctl:7000",
        str((tmp_path / "ca.pem").resolve()),
        "vp_secret",
    )
    assert "vp_secret" not in repr(loaded) and "vp_secret" not in repr(loaded.credentials())
    monkeypatch.setenv("VIRTPLANE_ADDRESS", "other:7000")
    monkeypatch.setenv("VIRTPLANE_TOKEN", "vp_other")
    assert (config.load().address, config.load().token) == ("other:7000", "vp_other")


def test_no_config_is_tls_and_plaintext_only_when_asked(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not config.load().credentials().insecure_development
    monkeypatch.setenv("VIRTPLANE_INSECURE_DEV", "1")
    assert config.load().credentials().insecure_development
    with pytest.raises(ValueError, match="needs its key"):
        Credentials(ca=b"x", cert=b"y")


async def test_after_login_the_commands_work(
    auth: AuthRig, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca = _write(tmp_path / "ca.pem", auth.pki.ca_pem)
    token = _write(tmp_path / "token", auth.admin_token.encode())
    await _cli(capsys, "login", "--address", auth.tls, "--ca", ca, "--token-file", token)
    listed = await _cli(capsys, "principal", "list")  # an admin's call: the token was sent
    assert listed.split() == ["admin", "admin", "user"]
    out = await _cli(capsys, "principal", "create", "bob", "--role", "viewer")
    assert out.split() == ["bob", "viewer", "user"]
    secret_file = tmp_path / "bob.token"
    out = await _cli(capsys, "token", "create", "bob", "--out", str(secret_file))
    assert _mode(secret_file) == 0o600
    secret = secret_file.read_text().strip()
    assert secret.startswith("vp_") and secret not in out
    listed = await _cli(capsys, "token", "list", "bob")
    assert "bob" in listed and secret not in listed
    token_id = listed.split()[0]
    assert await _cli(capsys, "token", "revoke", token_id) == f"{token_id}: revoked\n"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


async def test_the_clients_take_a_token_or_a_key_pair(auth: AuthRig, tmp_path: Path) -> None:
    ca = _write(tmp_path / "ca.pem", auth.pki.ca_pem)
    async with AsyncClient(auth.tls, credentials=Credentials(ca=ca, token=auth.admin_token)) as vp:
        await vp.principals.create("carol", Role.OPERATOR)
        key, csr = csr_for("carol")
        cert, ca_pem = await vp.principals.issue_certificate("carol", csr)
    assert ca_pem == auth.pki.ca_pem
    pair = Credentials(ca=auth.pki.ca_pem, cert=cert, key=key)
    async with AsyncClient(auth.mtls, credentials=pair) as vp:
        assert await vp.vms.list() == ()
        with pytest.raises(RpcError) as err:
            await vp.principals.list()
        assert err.value.code.name == "PERMISSION_DENIED"
    await asyncio.to_thread(_refused_blocking, auth.tls, ca)


def _refused_blocking(address: str, ca: str) -> None:
    """The blocking client sends its token too (on a thread of its own: the
    controller runs on the test's event loop)."""
    with Client(address, credentials=Credentials(ca=ca, token="vp_wrong")) as blocking:
        with pytest.raises(RpcError) as err:
            blocking.vms.list()
        assert err.value.code.name == "UNAUTHENTICATED"
