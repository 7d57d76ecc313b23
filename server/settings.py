"""One settings object for the server and the CLI, read from DMLSCOPE_* environment variables.

Explicit constructor arguments (the CLI's flags) win over the environment, which wins over the defaults.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "DMLSCOPE_"


class SettingsError(ValueError):
    """A setting combination the server must not start with; the message says which variable to set."""


def _split_list(value: Any) -> Any:
    # "a,b" or a JSON-ish list in an environment variable; an empty string is an empty list.
    if isinstance(value, str):
        text = value.strip().strip("[]")
        return [p.strip().strip("'\"") for p in text.split(",") if p.strip()]
    return value


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
_ANY_ADDRESS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    data_dir: Path = Field(Path("data"), description="folder holding the database, datasets and runs")
    database_url: str | None = Field(
        None, description="sqlite:///path/to/file.sqlite3 (default: dmlscope.sqlite3 in the data folder)")
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback requires an API token")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    api_token: SecretStr | None = Field(
        None, description="Bearer token required by every mutating request when set (blank counts as unset)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated host names the server answers to besides localhost, "
                                          "127.0.0.1, [::1] and --host ('*.example.org' for subdomains); a request "
                                          "addressed to any other name is refused (DNS rebinding)")
    workers: int = Field(1, ge=1, le=64, description="training runs executed at the same time")
    import_executor: Literal["process", "thread"] = Field(
        "process", description="where an upload is imported: process (a worker process per import: decoding never "
                               "slows the server, and cancel stops it at once) or thread (in the server's process, "
                               "stopping at its next file: no process start, for small machines and the tests)")
    max_queued: int = Field(100, ge=1, le=100_000, description="queued runs accepted before 503 queue_full")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto | cpu | cuda; cpu hides GPUs from the training workers")
    max_request_mb: int = Field(512, ge=1, le=1_000_000, description="largest request body in MiB (uploads)")
    # What one upload may cost once unpacked (models.data.UploadLimits; the archive itself is max_request_mb).
    max_upload_files: int = Field(250_000, ge=1, le=10_000_000, description="files (zip entries) in one upload")
    max_unpacked_mb: int = Field(16_384, ge=1, le=10_000_000,
                                 description="uncompressed size of one upload in MiB, counted while unpacking")
    max_zip_ratio: float = Field(200.0, ge=1.0, le=100_000.0,
                                 description="largest unpacked/packed ratio of a zip entry before it counts as a bomb")
    max_image_pixels: int = Field(64_000_000, ge=1, le=2_000_000_000,
                                  description="width x height of one image, checked from its header before decoding")
    body_timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds a request body may stop arriving "
                                                                     "before the request is dropped with 408")
    max_file_mb: int = Field(64, ge=1, le=1_000_000, description="one uploaded file in MiB; larger files are skipped")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins allowed by CORS (empty: CORS off)")
    builtin_datasets: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["mnist5k"], description="built-in datasets imported on first start")
    torch_threads: int | None = Field(None, ge=1, le=1024, description="CPU threads per training worker")
    demo_run: bool = Field(False, description="on a store with no runs, queue one default run on the first "
                                              "built-in set so the first visit has a map to explore")
    warm_umap: bool = Field(True, description="compile UMAP in the background at start-up so the first map is fast")
    cancel_grace_s: float = Field(
        30.0, gt=0, le=3600, description="seconds a cancelled worker gets to stop before it is killed")

    _split_lists = field_validator("cors_origins", "builtin_datasets", "allowed_hosts", mode="before")(_split_list)

    @field_validator("api_token", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, token: Any) -> Any:
        # DMLSCOPE_API_TOKEN= (or spaces) must not become a token that 'Authorization: Bearer ' matches.
        text = token.get_secret_value() if isinstance(token, SecretStr) else token
        if isinstance(text, str) and not text.strip():
            return None
        return token

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        out = []
        for host in hosts:
            name = host.strip().lower().rstrip(".")
            if name.startswith("[") and name.endswith("]"):
                name = name[1:-1]
            if not name or "/" in name or " " in name or (name.count(":") == 1):
                raise ValueError(f"allowed host {host!r} is not a host name: give names like 'lab.example.org' or "
                                 f"'*.example.org' or addresses like '10.0.0.5' (no scheme, no port)")
            out.append(name)
        return out

    @field_validator("database_url")
    @classmethod
    def _sqlite_only(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            scheme = url.split(":", 1)[0] if ":" in url else url
            raise ValueError(f"database URL scheme {scheme!r} is not supported; use sqlite:///path/to/file.sqlite3 "
                             f"(or leave {ENV_PREFIX}DATABASE_URL unset for the default in the data folder)")
        return url

    @property
    def database_path(self) -> Path:
        if self.database_url is None:
            return self.data_dir / "dmlscope.sqlite3"
        return Path(self.database_url.removeprefix("sqlite:///"))

    def allowed_host_names(self) -> set[str]:
        """The names (lower case, IPv6 without brackets) a request's Host may carry: loopback, the bound host
        unless it is a wildcard address, and DMLSCOPE_ALLOWED_HOSTS."""
        bound = self.host.strip().lower().strip("[]")
        return {*LOOPBACK_NAMES, *self.allowed_hosts, *([bound] if bound not in _ANY_ADDRESS else [])}

    def check_serving(self) -> None:
        """Refuse settings that would expose an unprotected server."""
        if not is_loopback(self.host) and self.api_token is None:
            raise SettingsError(
                f"binding to {self.host} exposes the server beyond this machine; set {ENV_PREFIX}API_TOKEN to a "
                f"non-blank secret (clients then send 'Authorization: Bearer <token>') or bind to 127.0.0.1")

    @classmethod
    def field_help(cls) -> list[tuple[str, str, str]]:
        """(environment variable, default, description) per setting, for `dmlscope serve --help`."""
        rows = []
        for name, info in cls.model_fields.items():
            default = info.default_factory() if info.default_factory else info.default
            if isinstance(default, list):
                default = ",".join(default)
            rows.append((ENV_PREFIX + name.upper(), "" if default is None else str(default), info.description or ""))
        return rows
