"""One typed, immutable settings object for the whole node.

Sources, later ones winning: the embedded defaults below (documented, value for value, in
``conf/vlnode.toml``), a TOML file given with ``--config`` or ``VLNODE_CONFIG``, then
environment variables ``VLNODE_<SECTION>__<KEY>`` (for example ``VLNODE_NODE__PORT=11113``).
Every value is validated at start-up; a wrong one raises :class:`SettingsError` whose message
names the key, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "VLNODE_CONFIG"
REPO_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# PS3.5 6.2: AE titles are up to 16 characters of the default repertoire, no backslash or
# control characters, and not all spaces.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class SettingsError(ValueError):
    """The configuration is wrong; the message names key, value and what is allowed."""


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError(
            "must be 1 to 16 printable ASCII characters without a backslash, not all spaces"
        )
    return value.strip()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AllowedCaller(_Frozen):
    """A calling AE title that may associate, optionally only from one host or address."""

    ae_title: str
    host: str | None = None

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))


class DestinationTls(_Frozen):
    """DICOM TLS to a destination (PS3.15 B.1); its certificate is always verified."""

    # CA certificates (PEM) that sign the destination's certificate; unset: the system's CAs.
    ca_file: Path | None = None
    # Our client certificate and its unencrypted key (PEM), for a destination that asks.
    certificate: Path | None = None
    private_key: Path | None = None
    # Check that the destination's certificate names the host we connect to (or server_name).
    check_hostname: bool = True
    # The name to check and to send in SNI; unset: the destination's host.
    server_name: str | None = None

    @model_validator(mode="after")
    def _usable(self) -> DestinationTls:
        from dicom_node.tls import client_context

        client_context(self.ca_file, self.certificate, self.private_key, self.check_hostname)
        return self


class Destination(_Frozen):
    """A peer that receives the node's results (SR, SEG) by C-STORE."""

    name: str = Field(min_length=1)
    ae_title: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # "comprehensive-3d": TID 1500 measurement report; "basic-text": a text-only SR for
    # workstations that show nothing else.
    sr_format: Literal["comprehensive-3d", "basic-text"] = "comprehensive-3d"
    # "binary" everywhere; "labelmap" only for a destination known to accept it (Orthanc 1.10
    # refuses LABELMAP SEGs).
    seg_format: Literal["binary", "labelmap"] = "binary"
    # Transfer syntax UIDs the destination accepts besides Explicit/Implicit VR Little Endian;
    # with JPEG 2000 lossless (1.2.840.10008.1.2.4.90) listed, SEG frames are sent compressed.
    transfer_syntaxes: tuple[str, ...] = ()
    # Deliver over DICOM TLS (the destination's TLS port); unset: plain TCP.
    tls: DestinationTls | None = None

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))


class TlsSettings(_Frozen):
    """The DICOM TLS listener (PS3.15 B.1): a port of its own, beside the plain one or alone."""

    # Unset: no TLS listener. 2762 is the port IANA registered for DICOM over TLS.
    port: int | None = Field(default=None, ge=1, le=65535)
    # Our certificate and its unencrypted private key (PEM).
    certificate: Path | None = None
    private_key: Path | None = None
    # CA certificates (PEM) whose client certificates are trusted.
    ca_file: Path | None = None
    # Refuse peers without a client certificate signed by ca_file.
    require_client_certificate: bool = False
    # Keep listening on node.port without TLS as well.
    plain_port: bool = True
    # Seconds a peer has to complete its handshake.
    handshake_timeout: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _usable(self) -> TlsSettings:
        if self.port is None:
            if not self.plain_port:
                raise ValueError("plain_port = false needs a TLS port (node.tls.port)")
            return self
        if self.certificate is None or self.private_key is None:
            raise ValueError("a TLS port needs node.tls.certificate and node.tls.private_key")
        from dicom_node.tls import server_context

        server_context(
            self.certificate, self.private_key, self.ca_file, self.require_client_certificate
        )
        return self


class NodeSettings(_Frozen):
    """The DICOM listener and its association policy."""

    ae_title: str = "VLNODE"
    bind_address: str = "0.0.0.0"
    port: int = Field(default=11112, ge=1, le=65535)
    # Empty: any calling AE title is accepted. Otherwise only these (and hosts, when given).
    allowed_callers: tuple[AllowedCaller, ...] = ()
    # Reject associations whose called AE title is not ours.
    require_called_ae_title: bool = True
    max_associations: int = Field(default=16, ge=1, le=1000)
    # Largest PDU we accept, in bytes; 0 means no limit. Large PDUs mean fewer Python calls.
    max_pdu: int = Field(default=4_194_304, ge=0)
    # Listener processes; the GIL caps one process near one core. The main process accepts and
    # hands each connection to the least busy one (dicom_node.dispatch).
    listener_processes: int = Field(default=1, ge=1, le=64)
    # Seconds without any PDU before an association is aborted.
    network_timeout: float = Field(default=60.0, gt=0)
    # Refuse new stores ("out of resources") when the spool's disk has less free space.
    min_free_disk_mb: int = Field(default=1024, ge=0)
    # DICOM TLS (node.tls.port, certificate, private_key, ...); off unless a port is set.
    tls: TlsSettings = TlsSettings()

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @model_validator(mode="after")
    def _ports_differ(self) -> NodeSettings:
        if self.tls.port == self.port and self.tls.plain_port:
            raise ValueError(f"node.tls.port {self.port} is node.port too: give it another port")
        return self


class StoreSettings(_Frozen):
    """Where the node keeps its files and its database."""

    data_dir: Path = Path("vlnode-data")
    # Empty: SQLite in the data directory. Otherwise an SQLAlchemy URL, e.g.
    # postgresql+psycopg://vlnode@localhost/vlnode
    database_url: str = ""
    # How a received instance is made durable before it is acknowledged (dicom_node.seal):
    # "sealed" one disk flush (syncfs), the file sealed with its size and CRC-32 in an extended
    # attribute; "portable" two flushes (fdatasync the file, fsync its folder), for any file
    # system; "auto" sealed where the spool's file system keeps extended attributes.
    spool_sync: Literal["auto", "sealed", "portable"] = "auto"

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v and not v.startswith(("sqlite", "postgresql")):
            raise ValueError("must be empty (SQLite in data_dir), sqlite:///... or postgresql...")
        return v


class StudySettings(_Frozen):
    """When a study is considered complete."""

    # A study is ready when no instance of it arrived for this many seconds.
    stable_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # How often the stable-study detector looks.
    check_interval_seconds: float = Field(default=2.0, gt=0, le=3600)


class WorkerSettings(_Frozen):
    """The worker that reads ready studies with the routed model packages."""

    # Routing rules (TOML); empty: conf/routing.toml of this installation.
    routing: Path | None = None
    # Name of this worker in the job table; empty: the host name and process id.
    name: str = ""
    # A claimed job is the worker's for this long, renewed while it runs; a worker that dies
    # loses it when the lease expires and another worker takes the job up.
    lease_seconds: float = Field(default=120.0, gt=1, le=86_400)
    # A job whose worker died this many times (or that failed to run) ends failed.
    max_attempts: int = Field(default=3, ge=1, le=100)
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # "auto": CUDA when present (half precision), else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # SEG frames without any segmented pixel are left out (highdicom's omit_empty_frames).
    seg_omit_empty_frames: bool = True


class DeliverySettings(_Frozen):
    """How results are sent to the destinations, and retried."""

    # Waits between tries grow from the first to the cap (doubling, with jitter).
    first_retry_seconds: float = Field(default=5.0, gt=0, le=86_400)
    max_retry_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # Tries before a delivery goes to the dead letters (`vlnode deliveries --resend`).
    max_attempts: int = Field(default=12, ge=1, le=1000)
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # Seconds to wait for an association, a response or a connection.
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)


class MonitoringSettings(_Frozen):
    """The HTTP endpoint for Prometheus (``/metrics``) and probes (``/healthz``, ``/readyz``)."""

    # 0: off (the default: a node started with no configuration opens no port besides DICOM).
    # Each process (serve, listen, work, send) needs its own port when several share a host.
    port: int = Field(default=0, ge=0, le=65535)
    bind_address: str = "127.0.0.1"


class RetentionSettings(_Frozen):
    """When received instances and outputs are removed from the data directory (store.retention).

    A study is never purged while its job is queued or running, while it is still receiving,
    or while one of its outputs is neither delivered nor dead.
    """

    # Remove a study's files this many days after its last activity (the last instance, the
    # job's end, the last delivery); 0: never by age.
    keep_days: float = Field(default=0.0, ge=0)
    # Also remove the oldest purgeable studies while the data directory's disk has less free
    # space than this; 0: no floor.
    min_free_disk_mb: int = Field(default=0, ge=0)
    # How often `vlnode serve` and `vlnode work` apply the policy (when either of the above is set).
    interval_seconds: float = Field(default=3600.0, gt=0, le=86_400 * 7)


class LoggingSettings(_Frozen):
    level: str = "INFO"

    @field_validator("level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        allowed = ("DEBUG", "INFO", "WARNING", "ERROR")
        if v.upper() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v.upper()


class Settings(BaseSettings):
    """Everything the node reads from its configuration."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix="VLNODE_",
        env_nested_delimiter="__",
        toml_file=None,
    )

    node: NodeSettings = NodeSettings()
    store: StoreSettings = StoreSettings()
    study: StudySettings = StudySettings()
    worker: WorkerSettings = WorkerSettings()
    delivery: DeliverySettings = DeliverySettings()
    destinations: tuple[Destination, ...] = ()
    logging: LoggingSettings = LoggingSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    retention: RetentionSettings = RetentionSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path_in_effect()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL in effect (SQLite in the data directory by default)."""
        if self.store.database_url:
            return self.store.database_url
        return f"sqlite:///{self.store.data_dir.resolve() / 'vlnode.db'}"

    @property
    def routing_file(self) -> Path:
        """The routing rules in effect."""
        return self.worker.routing or REPO_CONF_DIR / "routing.toml"

    @property
    def spool_dir(self) -> Path:
        return self.store.data_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.store.data_dir / "quarantine"


_config_override: Path | None = None


def _config_path_in_effect() -> Path | None:
    if _config_override is not None:
        return _config_override
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else None


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings; raise :class:`SettingsError` naming what is wrong."""
    global _config_override
    path = Path(config_file) if config_file else _config_path_in_effect()
    if path is not None and not path.is_file():
        raise SettingsError(f"configuration file {str(path)!r} does not exist or is not a file")
    _config_override = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, path)) from None
    except (OSError, ValueError) as exc:  # e.g. TOML syntax errors
        raise SettingsError(f"cannot read configuration file {str(path)!r}: {exc}") from None
    finally:
        _config_override = None


def _explain(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        env_key = "VLNODE_" + "__".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        lines.append(
            f"  {key} = {value!r}: {err['msg']} (set it in the config file or as {env_key})"
        )
    return "\n".join(lines)
