"""Commands around the bundle and the config: inspect, build-engine, bench, install-service, config."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_build_engine(args: argparse.Namespace) -> int:
    from animalclap_edge.backends.tensorrt_backend import TensorRTUnavailable, build_engine
    from animalclap_edge.bundle import demo_bundle_path, load_bundle
    from animalclap_edge.config import load_config

    cfg = load_config(args.config).backend
    bundle = load_bundle(args.bundle or demo_bundle_path())
    try:
        path, built = build_engine(
            bundle,
            precision=args.precision or cfg.precision,
            max_batch=args.max_batch or cfg.batch_size,
            engine_cache=cfg.engine_cache_dir,
            workspace_gb=args.workspace_gb,
        )
    except TensorRTUnavailable as e:
        print(f"animalclap-edge: error: {e}", file=sys.stderr)
        return 2
    print(f"{'built' if built else 'already built'}: {path}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from animalclap_edge.bench import bench, format_report

    r = bench(
        args.bundle,
        args.audio,
        args.seconds,
        args.threads,
        args.birdnet,
        None if args.no_species_scaling else tuple(args.species),
        onnx=args.onnx,
        batch=args.batch,
        encoders=args.encoder,
    )
    print(format_report(r))
    if args.out:
        Path(args.out).write_text(json.dumps(r, indent=2), encoding="utf-8")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from animalclap_edge.bundle import demo_bundle_path, load_bundle

    given = Path(args.bundle) if args.bundle else demo_bundle_path()
    b = load_bundle(given)
    # the graph too, as `run` opens it: inputs, outputs and the front-end in its metadata
    # (a bundle `run` refused was "verified" here before 2026-11-27)
    from animalclap_edge.backends.onnxruntime_backend import OnnxRuntimeBackend

    OnnxRuntimeBackend(b).close()
    m = b.manifest
    info = {
        "bundle": str(given),  # a .tar's path, not the folder it was unpacked to
        "bundle_id": m.bundle_id,
        "name": m.name,
        "schema_version": m.schema_version,
        "demo": m.demo,
        "notice": m.notice,
        "species": len(b.catalogue),
        "taxa": len(b.taxa),
        "embedding_dim": m.embedding_dim,
        "window_s": m.window_seconds,
        "sample_rate": m.sample_rate,
        "prompt_template": m.text.template,
        "precision": m.audio_encoder.precision,
        "traits": [t.name for t in b.trait_schema.traits] if b.trait_schema else [],
        "producer": m.producer.model_dump(),
        "parity": m.parity,
        "frontend": m.frontend,
        "verified": "schema, checksums and shapes OK; graph opened, its inputs, outputs "
        "and front-end metadata match the manifest",
    }
    if args.species:  # inside the JSON, so the output stays one document
        info["species_table"] = [
            {
                "id": sp.id,
                "scientific_name": sp.scientific_name,
                "common_name": sp.common_name,
                "class": sp.class_,
                "order": sp.order,
                "family": sp.family,
            }
            for sp in b.catalogue
        ]
    print(json.dumps(info, indent=2))
    return 0


def cmd_install_service(args: argparse.Namespace) -> int:
    from animalclap_edge.service import install_service

    r = install_service(
        config=args.config,
        bundle=args.bundle,
        user=args.user,
        unit_dir=args.unit_dir,
        working_dir=args.working_dir,
        dry_run=args.dry_run,
        enable=not args.no_enable,
        source=args.source,
        stdin_rate=args.stdin_rate,
    )
    if args.dry_run:
        print(r.unit_text, end="")
    for line in r.done:
        print(f"install-service: {line}", file=sys.stderr)
    for line in r.not_done:
        print(f"install-service: {line}", file=sys.stderr)
    return 0 if r.ok else 1


def cmd_config_check(args: argparse.Namespace) -> int:
    from animalclap_edge.config import ConfigError, load_config
    from animalclap_edge.secret_files import secret_problems

    bad = 0
    for f in args.files:
        try:  # firmware_configs/*.* takes in schema.json, beside the configs it describes
            doc = json.loads(Path(f).read_text(encoding="utf-8"))
            schema = isinstance(doc, dict) and {"$schema", "properties"} <= doc.keys()
        except (OSError, ValueError):  # YAML, unreadable: load_config says what
            schema = False
        if schema:
            bad += 1
            print(
                f"{f}: a JSON schema, not a config (it checks YAML configs in an editor)",
                file=sys.stderr,
            )
            continue
        try:
            cfg = load_config(f)
        except ConfigError as e:
            bad += 1
            print(str(e), file=sys.stderr)
            continue
        # files the config names that `run` reads: valid syntax is not a working config
        mqtt, http, live = cfg.messaging.mqtt, cfg.messaging.http, cfg.messaging.live
        missing = [
            f"messaging.mqtt.{key} {path}: no such file on this machine"
            for key in ("password_file", *mqtt.TLS_FILES)
            if mqtt.enabled and (path := getattr(mqtt, key)) and not Path(path).is_file()
        ] + [
            f"messaging.http.{key} {path}: no such file on this machine"
            for key in ("token_file", *http.TLS_FILES)
            if http.enabled and (path := getattr(http, key)) and not Path(path).is_file()
        ]
        # `serve` reads it even with live.enabled false, so it is checked whenever set
        if live.token_file and not Path(live.token_file).is_file():
            missing.append(
                f"messaging.live.token_file {live.token_file}: no such file on this machine"
            )
        missing += secret_problems(cfg, Path.cwd())
        if not missing:  # the files as TLS reads them (a key as the CA)
            from animalclap_edge.publish import PublishError, tls_context

            try:
                if mqtt.enabled:
                    tls_context(mqtt)
                if http.enabled:
                    tls_context(http, "messaging.http")
            except PublishError as e:
                missing.append(str(e))
        if missing:
            bad += 1
            for what in missing:
                print(f"{f}: {what} (run would refuse it)", file=sys.stderr)
            continue
        for section in (mqtt, http):
            if section.enabled and (warning := section.clear_text_password_warning()):
                print(f"{f}: {warning}", file=sys.stderr)
        print(f"{f}: ok")
    return 1 if bad else 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    from animalclap_edge.config import config_json_schema

    print(json.dumps(config_json_schema(), indent=2))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from animalclap_edge.config import dump_config, load_config

    print(dump_config(load_config(args.file)), end="")
    return 0
