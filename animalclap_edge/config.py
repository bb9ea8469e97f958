"""Runtime configuration: one YAML file per recorder, validated before anything runs.

Every key has a default, so an empty file is a valid config. A wrong file is refused
with one line per problem naming the file, the dotted key and what is allowed:

    edge.yaml: scoring.threshhold: unknown key (did you mean 'threshold'? allowed: ...)
    edge.yaml: backend.precision: 'int4' is not allowed (choose fp32, fp16, int8)

The JSON schema (`config_json_schema`, committed as firmware_configs/schema.json)
comes from the same models, so editors and `animalclap-edge config check` agree.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import re
import socket
import types
import typing
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# in select.BACKENDS's order; tests/animalclap_edge/backends/test_backends_agree.py
# checks that the two lists agree
BackendName = Literal["auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "onnx-reference"]
Precision = Literal["fp32", "fp16", "int8"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigError(Exception):
    """A config refused; `problems` holds one line per problem, each naming file and key."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Section(BaseModel):
    # strict: a quoted "0.5" or `yes` for a number is a typo on a recorder, not a
    # value to guess at; allow_inf_nan: `.inf` would pass every `> 0` check.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        # A section whose keys are all commented out parses as null; treat it as
        # "all defaults" rather than refusing the file.
        if isinstance(data, Mapping):
            return {
                k: v
                for k, v in data.items()
                if not (v is None and k in cls.model_fields and _model_of(cls, k) is not None)
            }
        return data


class DeviceConfig(_Section):
    """Which recorder profile this file describes (informational)."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field("generic-cpu", description="Device profile name, e.g. jetson-orin-nano.")
    description: str = Field("", description="Free text: hardware, site, owner.")
    name: str | None = Field(
        None,
        min_length=1,
        description="This recorder's name: written with every run, the <device> of its MQTT "
        "topics, the device column of reports; null = the host name. Give each recorder "
        "its own: recorders cloned from one image share a host name.",
    )
    site: str = Field(
        "",
        description="Where it records (a plot, transect or station code): written with "
        "every run, the site column of reports, so that cards merge by site.",
    )
    file_time_zone: str | None = Field(
        None,
        min_length=1,
        description="The zone the recorders write file names in when a name carries no "
        "offset of its own (a Song Meter's local time): an IANA zone, e.g. Europe/Berlin "
        "(daylight saving by each file's date), or a fixed offset, e.g. +02:00; null = UTC. "
        "An offset or Z in a name, or an AudioMoth header's zone, wins.",
    )

    @field_validator("name")
    @classmethod
    def _name_fits_a_topic(cls, v: str | None) -> str | None:
        # it is one level of an MQTT topic: a wildcard is refused by brokers, and a
        # slash would add a level that consumers' subscriptions do not expect
        if v is not None and any(c in v for c in "+#/"):
            raise PydanticCustomError(
                "device_name_topic",
                "must not contain +, # or / (it is one level of the MQTT topics; got {value})",
                {"value": repr(v)},
            )
        return v

    @field_validator("file_time_zone")
    @classmethod
    def _known_zone(cls, v: str | None) -> str | None:
        if v is not None:
            from animalclap_edge.sources.files import parse_file_time_zone

            try:
                parse_file_time_zone(v)
            except ValueError as e:
                raise PydanticCustomError("bad_time_zone", "{why}", {"why": str(e)}) from None
        return v

    def resolved_name(self) -> str:
        """`name`, or the host name where it is not set."""
        return self.name or socket.gethostname()


class AudioConfig(_Section):
    """Windowing and live-input settings."""

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(
        3.0,
        gt=0,
        description="Analysis window in seconds; must match the bundle's window (the bundle wins).",
    )
    hop_s: float = Field(1.5, gt=0, description="Step between windows in seconds; <= window_s.")
    input_device: str | int | None = Field(
        None,
        description="Live microphone: a substring of the device name or its index; null = system default.",
    )
    capture_sample_rate: int | None = Field(
        None, gt=0, description="Capture rate in Hz; null = the device's default rate."
    )
    channels: int = Field(1, ge=1, description="Channels to capture (mixed down to mono).")
    block_s: float = Field(0.5, gt=0, description="Seconds of audio per read from the source.")
    min_clip_s: float = Field(
        0.5, ge=0, description="Recordings shorter than this are skipped (logged as skipped)."
    )

    @field_validator("hop_s")
    @classmethod
    def _hop_within_window(cls, v: float, info: ValidationInfo) -> float:
        # A hop longer than the window leaves audio that no window ever sees.
        window = info.data.get("window_s")  # absent when window_s itself was invalid
        if window is not None and v > window:
            raise PydanticCustomError(
                "hop_exceeds_window",
                "must be <= audio.window_s (got {hop_s} > {window_s})",
                {"hop_s": v, "window_s": window},
            )
        return v


class BackendConfig(_Section):
    """Inference backend."""

    model_config = ConfigDict(extra="forbid")

    name: BackendName = Field(
        "auto",
        description="auto tries tensorrt, then onnxruntime-cuda, then onnxruntime-cpu; "
        "onnx-reference (the graph in numpy: slow, a check of the others) only when named.",
    )
    precision: Precision = Field("fp32", description="Engine precision (TensorRT builds).")
    threads: int = Field(0, ge=0, description="CPU threads for inference; 0 = library default.")
    batch_size: int = Field(8, ge=1, description="Windows per inference call.")
    engine_cache_dir: str | None = Field(
        None,
        description="Where built TensorRT engines are kept; null = $XDG_CACHE_HOME/animalclap-edge/engines.",
    )


class ScoringConfig(_Section):
    """Species thresholds, filters and taxonomic back-off."""

    model_config = ConfigDict(extra="forbid")

    threshold: Fraction | None = Field(
        None,
        description="Probability a species must reach; null = the bundle's calibrated default.",
    )
    top_k: int = Field(3, ge=1, description="At most this many labels per window.")
    species_thresholds: dict[str, Fraction] = Field(
        default_factory=dict, description="Per-species threshold, keyed by species id."
    )
    include: list[str] = Field(
        default_factory=list,
        description="Only these species (ids or scientific names) are candidates; empty = all. "
        "Every sound is scored among them, so a sound of a species left out is logged as the "
        "nearest of them: to log only some species, use report_only.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Never these species (ids or scientific names)."
    )
    regions: list[str] = Field(
        default_factory=list,
        description="Only species tagged with one of these regions are candidates (as "
        "include); empty = all.",
    )
    report_only: list[str] = Field(
        default_factory=list,
        description="Log only these species (ids or scientific names), and back-off taxa "
        "that hold one of them; every candidate is still scored, so a sound of another "
        "species is not logged as one of these. Empty = all.",
    )
    backoff: bool = Field(
        True, description="Report a genus/family/order/class when no species passes."
    )
    backoff_threshold: Fraction | None = Field(
        None,
        description="Evidence a back-off taxon must reach: (its mass - its share of the active "
        "species) / (1 - that share), 0 for a sound the model knows nothing of, 1 for all the "
        "mass; null = the bundle's default.",
    )
    merge_gap_s: float = Field(
        1.5,
        ge=0,
        description="Detections of one taxon whose window starts are at most this far apart are one event.",
    )


class StorageConfig(_Section):
    """Where detections (and optional clips) are kept."""

    model_config = ConfigDict(extra="forbid")

    database: str = Field("detections.db", description="SQLite database path.")
    clips_dir: str | None = Field(None, description="Folder for saved clips.")
    save_clips: bool = Field(False, description="Save the audio of each detection.")
    retention_days: int | None = Field(
        None,
        ge=1,
        description=(
            "Delete clip audio older than this, then detections and events older than this "
            "that the uplink has delivered (all of them when no uplink is used); "
            "null = keep forever."
        ),
    )
    max_disk_percent: float = Field(
        90.0,
        gt=0,
        le=100,
        description=(
            "Above this disk usage clips are refused and retention deletes clip audio. "
            "Counted as df does: used / (used + available), root's reserve counts as full."
        ),
    )
    retention_low_percent: float | None = Field(
        None,
        gt=0,
        lt=100,
        description=(
            "Retention deletes clip audio, oldest first, until disk usage is below this; "
            "null = 10 points below max_disk_percent (at least half of it)."
        ),
    )
    keep_examples_per_species: int = Field(
        3,
        ge=0,
        description="Clips of each species (or back-off taxon) with the highest probability that retention never deletes.",
    )
    retention_interval_s: float = Field(
        600.0,
        gt=0,
        description="Seconds between retention passes (also run at start and when the disk passes max_disk_percent).",
    )

    @field_validator("retention_low_percent")
    @classmethod
    def _low_below_high(cls, v: float | None, info: ValidationInfo) -> float | None:
        # Equal marks would make retention free nothing and run again on every clip.
        high = info.data.get("max_disk_percent")  # absent when it was itself invalid
        if v is not None and high is not None and v >= high:
            raise PydanticCustomError(
                "low_not_below_high",
                "must be < storage.max_disk_percent (got {low} >= {high})",
                {"low": v, "high": high},
            )
        return v

    @property
    def retention_low(self) -> float:
        """The low-water mark in force (`retention_low_percent` or its default)."""
        if self.retention_low_percent is not None:
            return self.retention_low_percent
        return max(self.max_disk_percent - 10.0, self.max_disk_percent / 2)

    @field_validator("save_clips")
    @classmethod
    def _clips_need_a_folder(cls, v: bool, info: ValidationInfo) -> bool:
        # Refused here rather than at the first detection, hours into a deployment.
        # A clips_dir that failed its own validation is absent from info.data and
        # already reported; only an explicit null is this error.
        if v and "clips_dir" in info.data and info.data["clips_dir"] is None:
            raise PydanticCustomError(
                "clips_dir_required", "true needs storage.clips_dir (a folder for the clips)"
            )
        return v


class OutputConfig(_Section):
    """What is printed per detection."""

    model_config = ConfigDict(extra="forbid")

    jsonl: bool = Field(
        False, description="One JSON line per detection on stdout instead of a text line."
    )
    console: bool = Field(
        True,
        description=(
            "A human-readable line per detection on stdout (unless jsonl); false with jsonl "
            "false: nothing per detection (the database holds every one)."
        ),
    )


class MqttConfig(_Section):
    """MQTT uplink of the detection outbox."""

    model_config = ConfigDict(extra="forbid")
    TLS_FILES: ClassVar[tuple[str, ...]] = ("ca_file", "cert_file", "key_file")

    enabled: bool = Field(
        False, description="Publish detections and merged events to an MQTT broker."
    )
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual with TLS).")
    topic_prefix: str = Field(
        "animalclap", min_length=1, description="Topics are <prefix>/<device>/..."
    )
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: str | None = Field(
        None,
        description="PEM file of the CA that signed the broker's certificate (a private "
        "broker's own CA); null = the system's trusted CAs. Needs tls: true.",
    )
    cert_file: str | None = Field(
        None,
        description="PEM client certificate, for brokers that require one (AWS IoT Core, "
        "mosquitto's require_certificate). Needs tls: true.",
    )
    key_file: str | None = Field(
        None,
        description="PEM private key of cert_file; null = the key is in cert_file.",
    )
    username: str | None = Field(None, description="Broker user name.")
    password_file: str | None = Field(
        None, description="File holding the password (kept out of the config)."
    )
    client_id: str | None = Field(
        None, description="MQTT client id; null = animalclap-<host>-<pid>."
    )
    heartbeat_s: float = Field(
        60.0,
        ge=5.0,
        description="Seconds between heartbeats on <prefix>/<device>/health (backlog, health "
        "events); longer on a metered link (satellite, cellular by the byte).",
    )

    @model_validator(mode="after")
    def _password_needs_username(self) -> MqttConfig:
        # paho sends no password without a user name: the connection went out
        # anonymous, and the broker's refusal (or worse, its acceptance) hid the typo
        if self.password_file is not None and not self.username:
            raise PydanticCustomError(
                "mqtt_password_without_username",
                "password_file is set but username is not: set username (the broker "
                "user the password belongs to) or remove password_file",
                {},
            )
        return self

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> MqttConfig:
        # without tls: true they were never read: the recorder sent in clear text to a
        # port that expects TLS, and the broker's silence looked like a network fault
        _check_tls_files(
            self, "mqtt", "tls is false: set tls: true (the broker's TLS port, usually 8883)"
        )
        return self

    def clear_text_password_warning(self) -> str | None:
        """The warning for a password sent without TLS to another machine, or None. Not
        refused: a broker on an isolated field LAN is a choice, but one said each time."""
        if self.password_file is None or self.tls or is_loopback_host(self.host):
            return None
        return (
            f"WARNING: messaging.mqtt sends the broker password to {self.host}:{self.port} "
            "in clear text (tls: false): anyone on the network path can read it; set tls: "
            "true and the broker's TLS port (usually 8883)"
        )

    @field_validator("topic_prefix")
    @classmethod
    def _no_wildcards(cls, v: str) -> str:
        # Wildcards are for subscribing; a broker rejects them in a publish topic.
        if "+" in v or "#" in v:
            raise PydanticCustomError(
                "topic_wildcard",
                "must not contain MQTT wildcards + or # (got {value})",
                {"value": repr(v)},
            )
        return v


def _check_tls_files(section: MqttConfig | HttpConfig, name: str, fix: str) -> None:
    """Refuse TLS files a section without TLS would never read, and a key without its
    certificate; `fix` says why they are unread and what turns TLS on."""
    given = [k for k in section.TLS_FILES if getattr(section, k)]
    if given and not section.tls:
        raise PydanticCustomError(
            f"{name}_tls_files_without_tls",
            "{keys} set but " + fix + " or remove {them}",
            {"keys": " and ".join(given), "them": "them" if len(given) > 1 else "it"},
        )
    if section.key_file and not section.cert_file:
        raise PydanticCustomError(
            f"{name}_key_without_cert",
            "key_file is set but cert_file is not: set cert_file (the client "
            "certificate the key belongs to) or remove key_file",
            {},
        )


def is_loopback_host(host: str) -> bool:
    """Whether `host` names only this machine's loopback interface; no DNS look-up.

    Any name other than localhost counts as not loopback: it could resolve anywhere,
    and whether a token is required must not depend on the network of the day.
    """
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?")


def _check_origin(origin: str) -> str:
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise PydanticCustomError(
            "cors_origin",
            "{value} is not an origin: write scheme://host[:port], no path or "
            "trailing slash (e.g. https://dashboard.example.org), or '*'",
            {"value": repr(origin)},
        )
    return origin


class LiveConfig(_Section):
    """Local HTTP endpoint streaming live detections as Server-Sent Events."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False,
        description="Serve live detections beside `run` (`animalclap-edge serve` serves them alone).",
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="Address to listen on; anything but a loopback address needs token_file.",
    )
    port: int = Field(8765, ge=1, le=65535, description="TCP port to listen on.")
    token_file: str | None = Field(
        None,
        description=(
            "File holding the bearer token every request must carry (mode 600; kept out of "
            "the config so configs can be shared); null = no token, loopback only."
        ),
    )
    poll_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="Seconds between each live client's checks of the database for new detections.",
    )
    # each origin checked alone: every wrong one is named, not only the first
    cors_origins: list[Annotated[str, AfterValidator(_check_origin)]] = Field(
        default_factory=list,
        description="Web pages served from elsewhere that may read the stream and /health in "
        "a browser, as origins (https://dashboard.example.org, http://localhost:3000); "
        "'*' for any (needs token_file). Empty: only this server's own page.",
    )

    @model_validator(mode="after")
    def _any_origin_needs_token(self) -> LiveConfig:
        # Without a token, '*' would let any web page the recorder's user visits read
        # the detections (where rare species are) from 127.0.0.1.
        if "*" in self.cors_origins and self.token_file is None:
            raise PydanticCustomError(
                "cors_any_origin_without_token",
                "cors_origins '*' lets any web page read the stream: set token_file, or "
                "name the origins of your dashboards",
                {},
            )
        return self

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> LiveConfig:
        # Refused when the config is checked, not when the recorder is already deployed.
        if self.token_file is None and not is_loopback_host(self.host):
            raise PydanticCustomError(
                "live_token_required",
                "host {host} is not a loopback address: set token_file (a file only its "
                "owner can read) or use host 127.0.0.1",
                {"host": repr(self.host)},
            )
        return self


class HttpConfig(_Section):
    """HTTP(S) uplink of the detection outbox: batches of messages POSTed as JSON to one
    URL, for networks that pass only web traffic (institutional firewalls, cellular
    gateways, a field station's proxy) and for servers that take webhooks, not MQTT."""

    model_config = ConfigDict(extra="forbid")
    TLS_FILES: ClassVar[tuple[str, ...]] = ("ca_file", "cert_file", "key_file")

    enabled: bool = Field(
        False,
        description="POST detections, merged events and heartbeats to url (off: MQTT, or "
        "no uplink; one uplink per database).",
    )
    url: str | None = Field(
        None,
        description="Where every batch is POSTed (https://host[:port]/path); the JSON body "
        "names its kind: detections, events or health. Required when enabled.",
    )
    token_file: str | None = Field(
        None,
        description="File holding the bearer token sent as 'Authorization: Bearer ...' "
        "(mode 600; kept out of the config); null = no Authorization header.",
    )
    ca_file: str | None = Field(
        None,
        description="PEM file of the CA that signed the server's certificate (a private "
        "server's own CA); null = the system's trusted CAs. Needs an https url.",
    )
    cert_file: str | None = Field(
        None,
        description="PEM client certificate, for servers that require one (mutual TLS). "
        "Needs an https url.",
    )
    key_file: str | None = Field(
        None, description="PEM private key of cert_file; null = the key is in cert_file."
    )
    batch: int = Field(
        50, ge=1, le=1000, description="Most messages in one POST (a refused batch is split)."
    )
    timeout_s: float = Field(
        30.0, gt=0, le=300, description="Seconds to wait for the server's answer to one POST."
    )
    heartbeat_s: float = Field(
        60.0,
        ge=5.0,
        description="Seconds between heartbeats (backlog, health events); longer on a "
        "metered link.",
    )

    @field_validator("url")
    @classmethod
    def _is_http_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urllib.parse.urlsplit(v)
        if "@" in parts.netloc:  # user:password@host; the url is said in logs
            raise PydanticCustomError(
                "http_url_credentials",
                "{value} carries credentials: put the token in token_file (sent as a "
                "bearer token), not in the url, which is logged",
                {"value": repr(f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}")},
            )
        try:
            port = parts.port  # ValueError above 65535: getaddrinfo would wrap it
        except ValueError:
            port = -1
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or port in (0, -1):
            raise PydanticCustomError(
                "http_url",
                "{value} is not an http(s) URL: write https://host[:port]/path (a port "
                "from 1 to 65535)",
                {"value": repr(v)},
            )
        return v

    @property
    def tls(self) -> bool:
        """Whether url is https (the TLS files are read only then)."""
        return (self.url or "").lower().startswith("https://")

    @property
    def host(self) -> str:
        """url's host name or address, without brackets or port."""
        return urllib.parse.urlsplit(self.url or "").hostname or ""

    @model_validator(mode="after")
    def _enabled_needs_url(self) -> HttpConfig:
        # a default url sent detections and the token to a host nobody chose
        if self.enabled and self.url is None:
            raise PydanticCustomError(
                "http_url_required",
                "enabled is true but url is not set: set url to your server's address "
                "(https://host[:port]/path)",
                {},
            )
        return self

    @model_validator(mode="after")
    def _tls_files_need_https(self) -> HttpConfig:
        _check_tls_files(self, "http", "url is not https: use an https:// url")
        return self

    def clear_text_password_warning(self) -> str | None:
        """The warning for a token sent without TLS to another machine, or None (not
        refused, as MQTT's password: an isolated field LAN is a choice)."""
        if self.token_file is None or self.tls or is_loopback_host(self.host):
            return None
        return (
            f"WARNING: messaging.http sends the bearer token to {self.url} in clear text "
            "(http://): anyone on the network path can read it; use an https:// url"
        )


class MessagingConfig(_Section):
    """Network uplinks."""

    model_config = ConfigDict(extra="forbid")

    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    live: LiveConfig = Field(default_factory=LiveConfig)

    @model_validator(mode="after")
    def _one_uplink(self) -> MessagingConfig:
        # the outbox keeps one delivered mark per message: with two uplinks, whichever
        # sent a message first would mark it, and the other would never send it
        if self.mqtt.enabled and self.http.enabled:
            raise PydanticCustomError(
                "two_uplinks",
                "mqtt and http are both enabled: one uplink per database (the outbox "
                "marks each message delivered once); set one's enabled: false",
                {},
            )
        return self

    @property
    def uplink(self) -> str | None:
        """The enabled uplink's section name ("mqtt", "http"), or None."""
        return "mqtt" if self.mqtt.enabled else "http" if self.http.enabled else None


class HealthConfig(_Section):
    """The watchdog on live sources, health snapshots and database backups."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(
        300.0, gt=0, description="Seconds between health snapshots (disk, temperature, counters)."
    )
    stall_s: float = Field(
        10.0, gt=0, description="A live source with no audio for this long is reopened."
    )
    silence_s: float = Field(
        600.0, gt=0, description="A live source below silence_dbfs for this long is reopened."
    )
    silence_dbfs: float = Field(
        -90.0, le=0, description="Digital silence: below any real microphone's self-noise."
    )
    reopen_backoff_s: list[float] = Field(
        [1.0, 300.0],
        min_length=2,
        max_length=2,
        description="[first, longest] wait in seconds before reopening a lost source.",
    )
    backup_interval_h: float | None = Field(
        24.0,
        ge=1,
        description=(
            "Hours between online backups of the database (each a whole copy: at least 1, "
            "for the card's wear); null = none."
        ),
    )
    thermal_root: str = Field(
        "/sys/class/thermal", description="Linux thermal zones (Jetson: CPU, GPU, SoC)."
    )

    @field_validator("reopen_backoff_s")
    @classmethod
    def _backoff_in_order(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1]:
            raise PydanticCustomError(
                "backoff_order",
                "needs [first, longest] with 0 < first <= longest, got {v}",
                {"v": list(v)},
            )
        return v


def _check_window(v: str) -> str:
    # Parsed at load time: a typo in a window must not surface as silence in the field.
    from animalclap_edge.schedule import ScheduleError, parse_window

    try:
        parse_window(v)
    except ScheduleError as e:
        raise PydanticCustomError("bad_window", "{why}", {"why": str(e)}) from None
    return v


class DutyCycleConfig(_Section):
    """Record `on_s` seconds of every `period_s` inside the windows."""

    model_config = ConfigDict(extra="forbid")

    on_s: float = Field(gt=0, description="Seconds recorded at the start of each period.")
    period_s: float = Field(gt=0, description="Length of one on-off cycle in seconds.")

    @field_validator("period_s")
    @classmethod
    def _period_longer_than_on(cls, v: float, info: ValidationInfo) -> float:
        on = info.data.get("on_s")  # absent when on_s itself was invalid
        if on is not None and v <= on:
            raise PydanticCustomError(
                "period_not_above_on",
                "must be > schedule.duty_cycle.on_s (got {period} <= {on}); "
                "leave duty_cycle out to record continuously",
                {"period": v, "on": on},
            )
        return v


class ScheduleConfig(_Section):
    """When a live source records: daily windows (UTC or sun-relative) and a duty cycle."""

    model_config = ConfigDict(extra="forbid")

    latitude: float | None = Field(
        None,
        ge=-90,
        le=90,
        description="Site latitude in decimal degrees, north positive; needed by sunrise/sunset windows.",
    )
    longitude: float | None = Field(
        None,
        ge=-180,
        le=180,
        description="Site longitude in decimal degrees, east positive; needed by sunrise/sunset windows.",
    )
    windows: list[Annotated[str, AfterValidator(_check_window)]] = Field(
        default_factory=list,
        description=(
            "Daily recording windows, e.g. '05:00-09:00' (UTC), '22:00-02:00 UTC+02:00', "
            "'sunrise-30m to sunrise+3h', 'sunset-1h to sunrise+1h'; empty = always record."
        ),
    )
    duty_cycle: DutyCycleConfig | None = Field(
        None, description="Record on_s seconds of every period_s inside the windows; null = all."
    )

    @field_validator("windows")
    @classmethod
    def _sun_needs_a_site(cls, v: list[str], info: ValidationInfo) -> list[str]:
        # Only an explicit null is this error: an out-of-range value is already reported.
        missing = [k for k in ("latitude", "longitude") if k in info.data and info.data[k] is None]
        sun = [w for w in v if "sunrise" in w.lower() or "sunset" in w.lower()]
        if sun and missing:
            raise PydanticCustomError(
                "sun_needs_site",
                "{window} uses sunrise/sunset: set schedule.latitude and schedule.longitude "
                "(decimal degrees, north and east positive)",
                {"window": repr(sun[0])},
            )
        return v


class EdgeConfig(_Section):
    """AnimalCLAP Edge recorder configuration."""

    model_config = ConfigDict(extra="forbid", title="AnimalCLAP Edge config")

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    messaging: MessagingConfig = Field(default_factory=MessagingConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)


# -- loading ------------------------------------------------------------------


def load_config(path: str | Path | None) -> EdgeConfig:
    """Read and validate a YAML config; None gives the defaults. Raises ConfigError."""
    if path is None:
        return EdgeConfig()
    src = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{src}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{src}: is a directory, not a YAML file"]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([f"{src}: not UTF-8 text (byte {e.start})"]) from None
    except OSError as e:
        raise ConfigError([f"{src}: cannot read: {e.strerror or e}"]) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        raise ConfigError([_yaml_problem(src, e)]) from None
    return config_from_dict({} if data is None else data, source=src)


def config_from_dict(d: Any, source: str = "<dict>") -> EdgeConfig:
    """Validate an already-parsed config mapping. Raises ConfigError."""
    if not isinstance(d, Mapping):
        raise ConfigError(
            [f"{source}: the top level must be a mapping of sections (got {_show(d)})"]
        )
    try:
        return EdgeConfig.model_validate(dict(d))
    except ValidationError as e:
        raise ConfigError(_problems(e, source)) from None


# The sections that decide what is detected in the audio; the others (device, storage,
# output, messaging, health, schedule: live sources only) decide where it goes and how
# the recorder runs.
ANALYSIS_SECTIONS: tuple[str, ...] = ("audio", "backend", "scoring")
# Settings in those sections that change how fast, not what: hashed at their defaults,
# so that a new thread count does not analyse a card's recordings again, and a config
# that never set them keeps the hash it had before they were left out.
SPEED_ONLY: dict[str, tuple[str, ...]] = {"backend": ("threads", "batch_size", "engine_cache_dir")}


def config_hash(cfg: EdgeConfig) -> str:
    """First 16 hex chars of the sha256 of the fully-defaulted ANALYSIS_SECTIONS as
    canonical JSON: what tells `run` that a recording was analysed with these settings.

    Spelling does not matter (`hop_s: 3` and `hop_s: 3.0`, key order, omitted defaults
    all hash the same); any effective value change in those sections does. Before
    2026-11-28 the whole config was hashed, so a new MQTT password, a recorder's name or
    a release that added any setting made `run` analyse a card's recordings again.
    SPEED_ONLY settings are hashed at their defaults (before 2026-11-29 they counted).
    """
    analysis = cfg.model_dump(mode="json", include=set(ANALYSIS_SECTIONS))
    for section, names in SPEED_ONLY.items():
        fields = type(getattr(cfg, section)).model_fields
        analysis[section].update({n: fields[n].get_default() for n in names})
    canonical = json.dumps(analysis, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def config_json_schema() -> dict[str, Any]:
    """JSON schema of the config file (for editors and `animalclap-edge config schema`)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **EdgeConfig.model_json_schema(),
    }


def write_json_schema(path: str | Path) -> None:
    """Write `config_json_schema()` to `path` (firmware_configs/schema.json is made so)."""
    Path(path).write_text(json.dumps(config_json_schema(), indent=2) + "\n", encoding="utf-8")


def dump_config(cfg: EdgeConfig) -> str:
    """The config as YAML with every default filled in; `load_config` reads it back equal."""
    return yaml.safe_dump(
        cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True, default_flow_style=False
    )


# -- YAML ---------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, bool) and isinstance(key_node, yaml.ScalarNode):
            # YAML 1.1 reads on/off/yes/no/true/false as booleans, keys included
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {key_node.value!r} is read by YAML as {key}, not as a name: no setting "
                f"is called that (check the spelling); quote it ('{key_node.value}') where it "
                "is a name, such as a species id",
                key_node.start_mark,
            )
        try:
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {first_line[key] + 1})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line
        except TypeError:  # unhashable key: construct_mapping reports it properly
            pass
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_problem(src: str, e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    where = f"{src}:{mark.line + 1}" if mark is not None else src
    col = f" (column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{where}: invalid YAML: {problem}{col}".split())


# -- ValidationError -> one line per problem ---------------------------------

_TYPE_WORDS = {
    "float_type": "a number",
    "float_parsing": "a number",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
    "finite_number": "a finite number",
}
_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}


def _problems(err: ValidationError, source: str) -> list[str]:
    out: list[str] = []
    unions_done: set[tuple[Any, ...]] = set()
    for e in err.errors():
        path, model, ann, in_union = _walk(e["loc"])
        if in_union:
            # One message for the value, not one per union member that rejected it.
            if tuple(path) in unions_done:
                continue
            unions_done.add(tuple(path))
            msg = f"must be {_describe(ann)} (got {_show(e['input'])})"
        else:
            msg = _message(e, model, ann)
        line = f"{source}: {_dotted(path) or '(top level)'}: {msg}"
        if line not in out:
            out.append(line)
    return out


def _message(e: Any, model: type[BaseModel] | None, ann: Any) -> str:
    kind, ctx, got = e["type"], e.get("ctx") or {}, e["input"]
    loc = e["loc"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = sorted(model.model_fields) if model is not None else []
        near = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if kind == "literal_error":
        choices = (
            [str(a) for a in typing.get_args(ann)]
            if typing.get_origin(ann) is Literal
            else [str(ctx.get("expected", "?"))]
        )
        return f"{_show(got)} is not allowed (choose {', '.join(choices)})"
    if kind == "missing":
        return "required"
    if loc and loc[-1] == "[key]":
        return f"key {_show(loc[-2])} must be {_TYPE_WORDS.get(kind, 'a string')}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return f"must be {_BOUNDS[kind]} {bound:g} (got {_show(got)})"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]} (got {_show(got)})"
    return e["msg"]  # our PydanticCustomErrors are already written as "must ..."


def _walk(loc: tuple[Any, ...]) -> tuple[list[Any], type[BaseModel] | None, Any, bool]:
    """Turn a pydantic loc into the key path the user wrote.

    Returns (path, the model whose field the path's last model-level key names (or
    would name, for an unknown key), the annotation the path ends at, whether the
    error came from one member of a union).
    """
    model: type[BaseModel] | None = EdgeConfig  # None once inside a plain field
    parent: type[BaseModel] | None = None
    ann: Any = None
    path: list[Any] = []
    in_union = False
    for part in loc:
        if part == "[key]":
            path.append(part)
            continue
        if model is not None:
            path.append(part)
            parent = model
            if not (isinstance(part, str) and part in model.model_fields):
                return path, parent, None, False  # an unknown key at this level
            ann = model.model_fields[part].annotation
            model = _model_of(model, part)
            continue
        members = [a for a in _union_args(_strip(ann)) if a is not type(None)]
        if len(members) > 1:
            in_union = True  # `part` names the union member, not a key the user wrote
            continue
        inner = _strip(members[0]) if members else ann
        path.append(part)
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        ann = args[-1] if origin is dict else args[0] if origin is list else inner
    if path and path[-1] == "[key]":
        path = path[:-2]  # the message names the key; the path is the mapping's
    return path, parent, ann, in_union


def _model_of(model: type[BaseModel], field: str) -> type[BaseModel] | None:
    ann = model.model_fields[field].annotation
    # `Section | None` (schedule.duty_cycle) names its own keys in errors too.
    members = [a for a in _union_args(ann) if a is not type(None)]
    if len(members) == 1:
        ann = members[0]
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _union_args(ann: Any) -> tuple[Any, ...]:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return typing.get_args(ann)
    return (ann,)


def _strip(ann: Any) -> Any:
    if typing.get_origin(ann) is Annotated:
        return typing.get_args(ann)[0]
    return ann


def _describe(ann: Any) -> str:
    words = []
    for a in _union_args(ann):
        a = _strip(a)
        if a is type(None):
            words.append("null")
        elif a is bool:
            words.append("true or false")
        elif a is int:
            words.append("an integer")
        elif a is float:
            words.append("a number")
        elif a is str:
            words.append("a string")
        else:
            words.append(getattr(a, "__name__", str(a)))
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0]


def _dotted(path: list[Any]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) and not isinstance(p, bool) else f".{p}"
    return s.lstrip(".")


def _show(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Mapping):
        return "a mapping"
    if isinstance(v, list | tuple):
        return "a list"
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."
