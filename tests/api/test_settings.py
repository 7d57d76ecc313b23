"""Settings: environment variables, the database URL check, and refusing an unprotected public bind."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import Settings, SettingsError


def test_environment_variables_and_explicit_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DMLSCOPE_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("DMLSCOPE_PORT", "9123")
    monkeypatch.setenv("DMLSCOPE_BUILTIN_DATASETS", "digits, synthetic")
    monkeypatch.setenv("DMLSCOPE_CORS_ORIGINS", "")
    s = Settings()
    assert (s.data_dir, s.port, s.builtin_datasets, s.cors_origins) == (tmp_path / "env-data", 9123,
                                                                        ["digits", "synthetic"], [])
    assert s.database_path == tmp_path / "env-data" / "dmlscope.sqlite3"
    assert Settings(port=8001).port == 8001  # a CLI flag wins over the environment


def test_every_setting_is_listed_with_its_environment_variable() -> None:
    names = {env for env, _, _ in Settings.field_help()}
    assert names == {"DMLSCOPE_" + f.upper() for f in Settings.model_fields}
    assert all(help_text for _, _, help_text in Settings.field_help())


def test_database_url_must_be_sqlite(tmp_path) -> None:
    assert Settings(database_url=f"sqlite:///{tmp_path}/x.db").database_path == tmp_path / "x.db"
    with pytest.raises(ValidationError, match="'postgresql' is not supported; use sqlite:///"):
        Settings(database_url="postgresql://user@host/db")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "example.org"])
def test_public_bind_requires_a_token(host: str) -> None:
    with pytest.raises(SettingsError, match="set DMLSCOPE_API_TOKEN"):
        Settings(host=host).check_serving()
    Settings(host=host, api_token="s3cret").check_serving()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_needs_no_token(host: str) -> None:
    Settings(host=host).check_serving()


def test_serve_refuses_to_start_unprotected_on_a_public_address(tmp_path) -> None:
    from server.app import serve

    with pytest.raises(SettingsError, match="DMLSCOPE_API_TOKEN"):
        serve(Settings(host="0.0.0.0", data_dir=tmp_path))
    assert not (tmp_path / "dmlscope.sqlite3").exists()  # refused before anything was created
