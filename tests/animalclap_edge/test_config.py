"""Config files: every profile validates, and every mistake is named on one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from animalclap_edge.config import (
    ConfigError,
    EdgeConfig,
    config_from_dict,
    config_hash,
    config_json_schema,
    dump_config,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware_configs"
PROFILES = sorted(FIRMWARE.glob("*.yaml"))


def _write(tmp_path: Path, text: str, name: str = "edge.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert str(ei.value) == "\n".join(ei.value.problems)
    return ei.value.problems


def test_every_device_profile_exists():
    names = {p.stem for p in PROFILES}
    assert names >= {
        "jetson-orin-nano",
        "jetson-orin-nx",
        "jetson-agx-orin",
        "jetson-xavier-nx",
        "jetson-nano",
        "generic-cpu",
    }


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.stem)
def test_firmware_profile_validates(path: Path):
    cfg = load_config(path)
    assert cfg.device.profile == path.stem
    # A profile that differs from the defaults only in comments would be pointless.
    assert cfg.backend.threads > 0
    assert path.read_text(encoding="utf-8").startswith("# ")  # the hardware header


def test_backend_choices_per_hardware():
    by = {p.stem: load_config(p).backend for p in PROFILES}
    # fp16 on every Jetson: an int8 engine needs an int8 bundle, which the export gates
    # refuse for today's students; an int8 profile always fell back to onnxruntime
    jetsons = [p for p in by if p.startswith("jetson-")]
    assert len(jetsons) == 5
    for name in jetsons:
        assert (by[name].name, by[name].precision) == ("auto", "fp16")
    assert (by["generic-cpu"].name, by["generic-cpu"].precision) == ("onnxruntime-cpu", "fp32")


def test_unknown_key_suggests_the_closest(tmp_path: Path):
    p = _write(tmp_path, "scoring:\n  threshhold: 0.3\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}: scoring.threshhold: unknown key (did you mean 'threshold'? ")
    assert "allowed: backoff, backoff_threshold, exclude, include, merge_gap_s," in line


def test_unknown_section_lists_sections(tmp_path: Path):
    p = _write(tmp_path, "scorring: {}\n")
    (line,) = _problems(p)
    assert "scorring: unknown key (did you mean 'scoring'?" in line
    # Every section, sorted (the list grows as sections are added: schedule, health, ...).
    assert "allowed: audio, backend, device, " in line
    assert f"allowed: {', '.join(sorted(EdgeConfig.model_fields))})" in line


def test_wrong_types_are_named(tmp_path: Path):
    p = _write(
        tmp_path,
        "backend:\n  batch_size: '8'\n"
        "audio:\n  input_device: 1.5\n"
        "scoring:\n  include: Turdus merula\n  backoff: maybe\n",
    )
    problems = _problems(p)
    assert f"{p}: backend.batch_size: must be an integer (got '8')" in problems
    # One line for a union value, not one per member type that refused it.
    assert f"{p}: audio.input_device: must be a string, an integer or null (got 1.5)" in problems
    assert f"{p}: scoring.include: must be a list (got 'Turdus merula')" in problems
    assert f"{p}: scoring.backoff: must be true or false (got 'maybe')" in problems
    assert len(problems) == 4


def test_out_of_range_values(tmp_path: Path):
    p = _write(
        tmp_path,
        "scoring:\n  threshold: 1.5\n  species_thresholds: {eurbla: -0.1}\n"
        "storage:\n  max_disk_percent: 0\n",
    )
    problems = _problems(p)
    assert f"{p}: scoring.threshold: must be <= 1 (got 1.5)" in problems
    assert f"{p}: scoring.species_thresholds.eurbla: must be >= 0 (got -0.1)" in problems
    assert f"{p}: storage.max_disk_percent: must be > 0 (got 0)" in problems


def test_hop_longer_than_window(tmp_path: Path):
    p = _write(tmp_path, "audio:\n  window_s: 3.0\n  hop_s: 4.0\n")
    assert _problems(p) == [f"{p}: audio.hop_s: must be <= audio.window_s (got 4.0 > 3.0)"]
    assert load_config(_write(tmp_path, "audio: {hop_s: 3}\n", "ok.yaml")).audio.hop_s == 3.0


def test_bad_literal_lists_choices(tmp_path: Path):
    p = _write(tmp_path, "backend:\n  precision: int4\n  name: cuda\n")
    problems = _problems(p)
    assert f"{p}: backend.precision: 'int4' is not allowed (choose fp32, fp16, int8)" in problems
    assert (
        f"{p}: backend.name: 'cuda' is not allowed "
        "(choose auto, tensorrt, onnxruntime-cuda, onnxruntime-cpu, onnx-reference)" in problems
    )


def test_save_clips_needs_a_folder(tmp_path: Path):
    p = _write(tmp_path, "storage:\n  save_clips: true\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}: storage.save_clips: ") and "storage.clips_dir" in line


@pytest.mark.parametrize(
    "text, line_no",
    [
        ("scoring:\n  threshold: 0.3\n top_k: 2\n", 3),
        ("audio:\n  hop_s: [1,\n", 3),
        ("scoring:\n  top_k: 2\n  top_k: 3\n", 3),  # duplicate keys are refused, not overwritten
    ],
)
def test_yaml_syntax_error_is_one_line(tmp_path: Path, text: str, line_no: int):
    p = _write(tmp_path, text)
    (line,) = _problems(p)
    assert "\n" not in line
    assert line.startswith(f"{p}:{line_no}: invalid YAML: ")


@pytest.mark.parametrize("word", ["on", "off", "yes", "No"])
def test_a_key_yaml_reads_as_a_boolean_is_named_as_written(tmp_path: Path, word: str):
    p = _write(tmp_path, f"audio:\n  {word}: 3\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}:2: invalid YAML: key '{word}' is read by YAML as ")
    assert "check the spelling" in line
    quoted = _write(tmp_path, f"audio:\n  '{word}': 3\n")  # a string key: an unknown setting
    (line,) = _problems(quoted)
    assert "invalid YAML" not in line and word in line


def test_top_level_must_be_a_mapping(tmp_path: Path):
    p = _write(tmp_path, "- audio\n- scoring\n")
    assert _problems(p) == [f"{p}: the top level must be a mapping of sections (got a list)"]


def test_missing_file_is_a_config_error(tmp_path: Path):
    assert _problems(tmp_path / "nope.yaml") == [f"{tmp_path / 'nope.yaml'}: no such file"]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "scoring:\nmessaging:\n  mqtt:\n"])
def test_empty_file_and_empty_sections_give_defaults(tmp_path: Path, text: str):
    assert load_config(_write(tmp_path, text)) == EdgeConfig()


def test_defaults():
    cfg = load_config(None)
    assert cfg == EdgeConfig()
    assert (cfg.audio.window_s, cfg.audio.hop_s, cfg.backend.name) == (3.0, 1.5, "auto")
    assert (cfg.scoring.threshold, cfg.scoring.top_k, cfg.storage.database) == (
        None,
        3,
        "detections.db",
    )
    assert cfg.messaging.mqtt.enabled is False and cfg.messaging.mqtt.port == 1883


def test_config_hash_stable_and_sensitive(tmp_path: Path):
    base = config_hash(EdgeConfig())
    # what cards analysed since 2026-11-28 hold for the default analysis: a change
    # analyses every card again, so it must be made on purpose (and told in changes.md)
    assert base == "aa784ba28c278f28"
    assert config_hash(load_config(None)) == base
    assert config_hash(load_config(_write(tmp_path, ""))) == base
    # Spelling, key order and stating a default do not change the hash ...
    a = config_from_dict({"audio": {"hop_s": 1.5, "window_s": 3}, "scoring": {"top_k": 3}})
    assert config_hash(a) == base
    # ... any effective value does.
    assert config_hash(config_from_dict({"scoring": {"threshold": 0.6}})) != base
    assert config_hash(config_from_dict({"audio": {"hop_s": 1.0}})) != base
    assert config_hash(config_from_dict({"backend": {"precision": "fp16"}})) != base
    # where detections go and how the recorder runs do not: `run` would analyse a card
    # again for a new MQTT password or a recorder's name
    elsewhere = {
        "device": {"name": "rec-07", "site": "ridge"},
        "storage": {"database": "other.db"},
        "output": {"jsonl": True},
        "messaging": {"mqtt": {"enabled": True, "host": "broker.lan"}},
    }
    assert config_hash(config_from_dict(elsewhere)) == base
    # nor how fast: a card analysed again for a new thread count or batch size
    faster = {"backend": {"threads": 2, "batch_size": 32, "engine_cache_dir": "/x"}}
    assert config_hash(config_from_dict(faster)) == base


def test_dump_round_trips(tmp_path: Path):
    for path in PROFILES:
        cfg = load_config(path)
        again = load_config(_write(tmp_path, dump_config(cfg), f"{path.stem}.yaml"))
        assert again == cfg and config_hash(again) == config_hash(cfg)


def test_schema_json_in_sync():
    committed = json.loads((FIRMWARE / "schema.json").read_text(encoding="utf-8"))
    assert committed == config_json_schema(), (
        "firmware_configs/schema.json is stale; regenerate with: python -c "
        '"from animalclap_edge.config import write_json_schema; '
        "write_json_schema('firmware_configs/schema.json')\""
    )


def test_schema_forbids_unknown_keys_everywhere():
    schema = config_json_schema()
    assert schema["additionalProperties"] is False
    for name, sub in schema["$defs"].items():
        assert sub.get("additionalProperties") is False, name


def test_a_password_file_without_a_username_is_refused(tmp_path: Path):
    """paho sends no password without a user name: the connection went out anonymous
    and `config check` said ok (found in a walkthrough)."""
    p = _write(tmp_path, "messaging:\n  mqtt:\n    enabled: true\n    password_file: /etc/pw\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}: messaging.mqtt: ") and "set username" in line


def test_config_check_names_a_missing_live_token_file(tmp_path: Path, capsys):
    """`config check` passed a token_file that `run` and `serve` refuse."""
    from animalclap_edge.cli import main

    p = _write(tmp_path, f"messaging:\n  live:\n    token_file: {tmp_path / 'nope'}\n")
    assert main(["config", "check", str(p)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{p}: messaging.live.token_file {tmp_path / 'nope'}: no such file on this machine "
        "(run would refuse it)"
    )
    (tmp_path / "nope").write_text("t" * 32 + "\n")
    (tmp_path / "nope").chmod(0o600)
    assert main(["config", "check", str(p)]) == 0


def test_config_check_names_secret_files_run_would_refuse(tmp_path: Path, capsys):
    """A token file of mode 644 passed `config check` and `install-service`, and `run`
    then refused it: the unit restarted every 10 s. A password file any user could read
    was used, and a password sent in clear text to another machine was not said."""
    from animalclap_edge.cli import main

    token, pw = tmp_path / "live.token", tmp_path / "mqtt.pw"
    token.write_text("t" * 32 + "\n")
    pw.write_text("secret\n")
    for f in (token, pw):
        f.chmod(0o644)
    p = _write(
        tmp_path,
        f"messaging:\n  live:\n    token_file: {token}\n  mqtt:\n    enabled: true\n"
        f"    host: broker.lan\n    username: rec\n    password_file: {pw}\n",
    )
    assert main(["config", "check", str(p)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{p}: messaging.mqtt.password_file {pw}: is open to other users (mode 644); run: "
        f"chmod 600 {pw} (run would refuse it)",
        f"{p}: messaging.live.token_file: token file {token} is open to other users (mode "
        f"644); run: chmod 600 {token} (run would refuse it)",
    ]
    for f in (token, pw):
        f.chmod(0o600)
    assert main(["config", "check", str(p)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"{p}: WARNING: messaging.mqtt sends the broker password to broker.lan:1883 in clear "
        "text (tls: false): anyone on the network path can read it; set tls: true and the "
        "broker's TLS port (usually 8883)"
    )


def test_tls_files_without_tls_or_a_key_without_its_certificate_are_refused(tmp_path: Path):
    """Without tls: true the files were never read: the recorder spoke plain MQTT to a
    TLS port, and the broker's silence looked like a network fault."""
    mqtt = "messaging:\n  mqtt:\n    enabled: true\n"
    p = _write(tmp_path, mqtt + "    ca_file: /etc/ca.pem\n    cert_file: /etc/c.pem\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}: messaging.mqtt: ca_file and cert_file set but tls is false")
    p = _write(tmp_path, mqtt + "    tls: true\n    key_file: /etc/k.pem\n")
    (line,) = _problems(p)
    assert "key_file is set but cert_file is not" in line


def test_config_check_names_missing_tls_files(tmp_path: Path, capsys):
    from animalclap_edge.cli import main

    p = _write(
        tmp_path,
        f"messaging:\n  mqtt:\n    enabled: true\n    tls: true\n    ca_file: {tmp_path}/ca.pem\n",
    )
    assert main(["config", "check", str(p)]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{p}: messaging.mqtt.ca_file {tmp_path}/ca.pem: no such file on this machine "
        "(run would refuse it)"
    )


def test_a_device_name_that_would_break_its_topics_is_refused(tmp_path: Path):
    p = _write(tmp_path, "device:\n  name: site-4/rec+1\n")
    (line,) = _problems(p)
    assert line.startswith(f"{p}: device.name: must not contain +, # or /")


SCHEMA = Path(__file__).resolve().parents[2] / "firmware_configs" / "schema.json"


def test_config_check_says_a_json_schema_is_not_a_config(capsys):
    """It printed 7 'unknown key' lines for the schema (found in a deployment trial)."""
    from animalclap_edge.cli import main

    assert main(["config", "check", str(SCHEMA)]) == 1
    assert capsys.readouterr().err == (
        f"{SCHEMA}: a JSON schema, not a config (it checks YAML configs in an editor)\n"
    )


def test_a_backup_more_often_than_hourly_is_refused():
    """`backup_interval_h: 0.0001` (minutes taken for hours) was taken: a whole copy of
    the database every snapshot, on an SD card (found in a deployment trial)."""
    from animalclap_edge.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=r"health.backup_interval_h: must be >= 1 \(got 0.0001\)"):
        config_from_dict({"health": {"backup_interval_h": 0.0001}})
    assert config_from_dict({"health": {"backup_interval_h": 1}}).health.backup_interval_h == 1


def test_file_time_zone_is_a_known_zone_or_offset(tmp_path: Path):
    """device.file_time_zone: the zone of file names without an offset (a Song Meter's
    local time); null = UTC. A zone this machine does not know is refused at load."""
    assert EdgeConfig().device.file_time_zone is None
    for zone in ("Europe/Berlin", "America/Bogota", "UTC", "+02:00", "-05:00", "+05:45"):
        assert config_from_dict({"device": {"file_time_zone": zone}}).device.file_time_zone == zone
    p = _write(tmp_path, "device:\n  file_time_zone: Europe/Berln\n")
    assert _problems(p) == [
        f"{p}: device.file_time_zone: 'Europe/Berln' is no time zone known here: give an IANA "
        "zone such as 'Europe/Berlin', or a fixed offset such as '+02:00'"
    ]
    for bad in ("+2", "UTC+2", "Europe", "+15:00", "+02:60"):
        p = _write(tmp_path, f"device:\n  file_time_zone: '{bad}'\n")
        (line,) = _problems(p)
        assert line.startswith(f"{p}: device.file_time_zone: '{bad}' is no ")
        assert line.endswith("such as 'Europe/Berlin', or a fixed offset such as '+02:00'")
    # where file times come from, not what is detected: cards are not analysed again
    berlin = config_from_dict({"device": {"file_time_zone": "Europe/Berlin"}})
    assert config_hash(berlin) == config_hash(EdgeConfig())
