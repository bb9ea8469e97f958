"""From a CLAP checkpoint to a verified bundle: text, ONNX, trait heads, calibration."""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np

from animalclap_edge.bundle import load_bundle
from animalclap_edge.contracts import bundle as B
from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.prompts import Template
from animalclap_edge.contracts.traits import TraitSchema
from export.checks import (
    audio_files,
    check_audio_folder,
    check_checkpoint,
    check_file,
    check_student,
    check_window,
    named,
)
from export.onnx_export import export_audio_encoder, parity
from export.quantize import PRE_PROCESS_NOTE, CalibrationError
from export.student import StudentEncoder, macs
from export.text import species_embeddings, taxon_embeddings
from export.writer import BundleWriter
from training.embed_audio import embed_items
from training.identity import absolute
from training.labelled_audio import LabelledSet, open_labelled
from training.lineage import trained_on_generated_audio
from training.model import AudioEncoder, load_clap
from training.probe import fit_trait_heads, score_trait_heads
from training.sampling import group_split

PARITY_MIN_COSINE = 0.999
# Reduced precision against the fp32 encoder on real audio (the export issue's gates).
MIN_TOP1_AGREEMENT = 0.99
MIN_MEAN_COSINE = 0.99
# Agreement only means something if windows differ: above this mean pairwise cosine
# the encoder maps everything to one point (e.g. an untrained student).
MAX_SPREAD_COSINE = 0.98
# Fewest held-out windows a reduced precision is judged on; even at 16, one window is
# 6% of top-1 agreement, so the default gate_windows (128) is what a field export uses.
MIN_GATE_WINDOWS = 16
# A student must follow its teacher, window by window, better than the one constant
# embedding that scores best (the norm of the teacher's mean embedding): a student that
# never learned (random weights, a wrong or unfinished distillation) still spreads its
# windows apart, passes the spread gate, and scored cosine 0.16 against 0.99 for a
# constant on the test teacher.
MIN_GAIN_OVER_CONSTANT = 0.0


MARGIN_FIGURES = ("median_top1_margin", "median_score_change", "windows_that_can_flip")


class ExportGateError(RuntimeError):
    """The exported model failed one of its own gates; nothing was written."""


@dataclass
class ExportConfig:
    checkpoint: str
    out: str
    data: str | None = None  # labelled set for trait heads (and catalogue if none given)
    catalogue: str | None = None  # species.csv to embed; default: the data's catalogue
    name: str = "animalclap"
    window_seconds: float = 3.0
    templates: list[str] = field(default_factory=lambda: ["tax+com"])
    parity_audio: str | None = None  # folder of real recordings for the torch/ONNX check
    parity_windows: int = 32
    default_threshold: float = 0.5
    max_trait_items: int = 2000
    demo: bool = False
    notice: str | None = None
    overwrite: bool = False
    training_run_id: str | None = None
    student: str | None = None  # distilled student folder: shipped instead of the teacher
    precision: str = "fp32"  # fp32 | fp16 | int8 (the CNN body; see export.quantize)
    calibration_audio: str | None = None  # default: parity_audio
    calibration_windows: int = 64
    gate_windows: int = 128


# CLAP's input (ClapFeatureExtractor's max_length_s); a checkpoint may take less.


def _refuse_early(cfg: ExportConfig) -> None:
    """What the request itself gets wrong, said before the model loads and the graph
    exports (tens of seconds at full size)."""
    if not (cfg.catalogue or cfg.data):
        raise ValueError("give --catalogue (species to embed) or --data (a labelled set with one)")
    check_window(cfg.window_seconds)
    if not (0 <= cfg.default_threshold <= 1):
        raise ValueError(f"--threshold {cfg.default_threshold}: give a probability, 0 to 1")
    if cfg.precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {cfg.precision!r}: choose fp32, fp16 or int8")
    if cfg.precision != "fp32" and not cfg.student:
        raise ValueError(
            "fp16/int8 apply to a distilled student: give --student (see `animalclap-export distill`)"
        )
    if not (cfg.parity_audio or cfg.data):
        raise ExportGateError(
            "gate 'onnx parity' needs real audio to compare onnxruntime with torch on: "
            "give --parity-audio DIR (a folder of recordings) or --data"
        )
    if cfg.precision != "fp32" and not (cfg.calibration_audio or cfg.parity_audio):
        raise ValueError(
            f"{cfg.precision} needs real recordings to check it on: give --calibration-audio DIR "
            "or --parity-audio DIR"
        )
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out} exists; pass --overwrite to replace it")
    check_checkpoint(cfg.checkpoint)
    if cfg.student:
        check_student(cfg.student)
    if cfg.catalogue:
        check_file(cfg.catalogue, "--catalogue")
    found = check_audio_folder(cfg.parity_audio, "--parity-audio") if cfg.parity_audio else 0
    if cfg.precision != "fp32":
        option, source = _calibration_source(cfg)
        if cfg.calibration_audio:
            found = check_audio_folder(source, option)
        n_calib, n_check = audio_needed(cfg.precision, cfg.calibration_windows)
        if found < n_calib + n_check:
            # each recording gives at most one window: too few files can never be enough
            raise CalibrationError(_too_little_audio(cfg, found, "recordings", n_calib, n_check))


def audio_needed(precision: str, calibration_windows: int = 64) -> tuple[int, int]:
    """(windows to calibrate on, windows to check the result on) that a precision needs
    at the least. fp16 is a cast: it calibrates on nothing."""
    if precision == "fp32":
        return 0, 0
    return (calibration_windows if precision == "int8" else 0), MIN_GATE_WINDOWS


def _calibration_source(cfg: ExportConfig) -> tuple[str, str]:
    """(the option the calibration audio came from, the folder)."""
    if cfg.calibration_audio:
        return "--calibration-audio", cfg.calibration_audio
    return "--parity-audio", str(cfg.parity_audio)


def _too_little_audio(cfg: ExportConfig, found: int, what: str, n_calib: int, n_check: int) -> str:
    option, folder = _calibration_source(cfg)
    source = folder if cfg.calibration_audio else f"{folder} (no --calibration-audio given)"
    need = n_calib + n_check
    split = f"{n_calib} to calibrate + {n_check} to check" if n_calib else f"{n_check} to check"
    w = cfg.window_seconds
    return (
        f"{option} {source}: found {found} {what}, {cfg.precision} needs {need} windows "
        f"({split}); the exporter takes one {w:g} s window from the start of each recording "
        f"(no hop; shorter ones are repeat-padded), so give at least {need} recordings "
        f"({need * w:g} s of audio in {need} windows)"
    )


def make_bundle(cfg: ExportConfig, progress: bool = True) -> Path:
    _refuse_early(cfg)
    templates = [Template.parse(t) for t in cfg.templates]
    # data and catalogue before the model: their errors are cheap to find
    data: LabelledSet | None = None
    if cfg.data:
        try:
            data = open_labelled(cfg.data)
        except (ValueError, FileNotFoundError) as e:
            raise named("--data", cfg.data, e) from e
    if cfg.catalogue:
        try:
            catalogue = Catalogue.from_csv(cfg.catalogue)
        except ValueError as e:
            raise named("--catalogue", cfg.catalogue, e) from e
    else:  # _refuse_early: without --catalogue, --data was given and opened above
        catalogue = cast(LabelledSet, data).catalogue
    if len(catalogue) < 2:
        # softmax over one species is 1 whatever the sound: every window a detection
        raise ValueError(
            f"{'--catalogue ' + cfg.catalogue if cfg.catalogue else f'--data {cfg.data}'}: "
            f"{len(catalogue)} species; a bundle needs at least two, since a species' "
            "probability is shared among the catalogue's species (with one, every sound "
            "would be it at p=1): add the species the recorder also hears"
        )
    notes = catalogue.not_one_species()
    for note in notes[:5]:  # said, not refused: genus-labelled data may mean them
        print(f"note: {note}; it competes with the species it overlaps", flush=True)
    if len(notes) > 5:
        print(f"note: and {len(notes) - 5} more rows like these", flush=True)
    loaded = load_clap(cfg.checkpoint)
    fe = loaded.frontend
    if cfg.window_seconds > fe.clip_seconds:  # a checkpoint with a shorter input than CLAP's
        raise ValueError(
            f"--window {cfg.window_seconds}: {cfg.checkpoint} takes {fe.clip_seconds:g} s of "
            "audio; the rest of a longer window would never be heard"
        )
    window = round(cfg.window_seconds * fe.sample_rate)
    teacher = AudioEncoder(loaded.model, fe, mode="dft").eval()
    encoder: AudioEncoder | StudentEncoder = teacher
    student_meta: dict | None = None
    if cfg.student:
        from export.student import load_student

        encoder, student_meta = load_student(cfg.student, mode="dft")
        if encoder.frontend_cfg != fe:
            raise ValueError(
                f"student {cfg.student} was distilled with another front-end than {loaded.source}"
            )
        from export.distill import weights_digest

        learned_from = student_meta.get("distill", {}).get("teacher_weights_sha256")
        here = weights_digest(cfg.checkpoint)
        if learned_from and here and learned_from != here:
            raise ValueError(
                f"student {cfg.student} was distilled from another teacher "
                f"({student_meta['distill'].get('teacher')}) than {cfg.checkpoint}: its audio "
                "embeddings would not match this checkpoint's text embeddings; distil it "
                "from this checkpoint"
            )
        if encoder.cfg.embedding_dim != int(loaded.model.config.projection_dim):
            raise ValueError(
                f"student embedding dim {encoder.cfg.embedding_dim} != teacher projection dim "
                f"{loaded.model.config.projection_dim}: distil it from this checkpoint"
            )
        learnt_on = student_meta.get("distill", {}).get("window_seconds")
        if learnt_on is not None and abs(learnt_on - cfg.window_seconds) > 1e-6:
            # said, not refused: the gates below measure it on this window (a 3 s student
            # at 5 s fell from 0.937 to 0.896 cosine, still above its gate)
            print(
                f"note: student {cfg.student} was distilled on {learnt_on:g} s windows; "
                f"this bundle's are {cfg.window_seconds:g} s (--window): its gates are "
                "measured at the bundle's window",
                flush=True,
            )

    writer = BundleWriter(cfg.out, overwrite=cfg.overwrite)
    try:
        catalogue.to_csv(writer.path(B.SPECIES))
        writer.write_embeddings(B.TEXT_EMBEDDINGS, species_embeddings(loaded, catalogue, templates))
        taxa, taxa_emb = taxon_embeddings(loaded, catalogue)
        writer.write_taxa(B.TAXA, taxa)
        writer.write_embeddings(B.TAXON_EMBEDDINGS, taxa_emb)

        provenance = {
            "checkpoint": absolute(loaded.source),
            # what the graph holds: the teacher's audio tower, or a student distilled from it
            "encoder": "student" if student_meta is not None else "teacher",
            "precision": cfg.precision,
            "git_commit": _git_commit(),
            "window_samples": window,
        }
        if student_meta is not None:
            student_dir = cast(str, cfg.student)  # student_meta was read from it
            provenance["student"] = absolute(student_dir)
            provenance["student_weights_sha256"] = B.sha256_file(Path(student_dir) / "student.pt")
        fp32_path = writer.path(B.AUDIO_ENCODER)
        if cfg.precision != "fp32":
            fp32_path = writer.scratch("audio_encoder.fp32.onnx")
        export_audio_encoder(encoder, window, fp32_path, provenance)
        windows, parity_source = _parity_windows(cfg, data, window, fe.sample_rate)
        measured = parity(encoder, fp32_path, windows)
        figures: dict[str, float | str] = {**measured, "parity_audio": parity_source}
        if cfg.precision != "fp32":  # the shipped graph's own figures are its gates'
            figures["measured_on"] = (
                f"the fp32 graph before conversion to {cfg.precision}; the {cfg.precision} "
                "graph's agreement with it is under gates"
            )
        gates = {
            "onnx parity": _gate(
                measured["onnx_vs_torch_min_cosine"],
                PARITY_MIN_COSINE,
                "min cosine, onnxruntime vs torch",
                parity_source,
            )
        }
        if student_meta is not None:
            gates.update(_student_gates(encoder, teacher, windows, parity_source, cfg.precision))
        if cfg.precision != "fp32":
            # the species rows as the bundle ships them (fp16): top-1 margins are
            # ~3e-4 on today's students, fp16 rounding of a row ~5e-4
            text_emb = np.load(writer.path(B.TEXT_EMBEDDINGS)).astype(np.float32)
            gates.update(
                _reduce_precision(
                    cfg,
                    fp32_path,
                    writer.path(B.AUDIO_ENCODER),
                    teacher,
                    text_emb,
                    window,
                    fe.sample_rate,
                )
            )
        failed = [_why(k, v) for k, v in gates.items() if not v["passed"]]
        if failed:
            raise ExportGateError(f"gate(s) failed, nothing written: {'; '.join(failed)}")

        traits_spec = None
        if data is not None and data.traits:
            traits_spec = _fit_heads(writer, encoder, data, window, cfg, progress)

        logit_scale = float(min(100.0, math.exp(loaded.model.logit_scale_a.item())))
        writer.write_json(
            B.CALIBRATION,
            B.Calibration(
                logit_scale=logit_scale,
                default_threshold=cfg.default_threshold,
            ).model_dump(),
        )
        if student_meta is None:
            n_params = sum(p.numel() for p in loaded.model.audio_model.parameters())
            n_params += sum(p.numel() for p in loaded.model.audio_projection.parameters())
        else:
            n_params = sum(p.numel() for p in encoder.parameters())
            for k, v in student_meta.get("distill", {}).items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    gates.setdefault("distillation", {})[k] = v
        demo, notice = cfg.demo, cfg.notice
        generated = trained_on_generated_audio(cfg.checkpoint)
        if generated and not demo:  # whatever heads or catalogue the bundle gets
            demo = True
            notice = notice or (
                f"the model was trained on the procedural benchmark ({generated}, generated "
                "audio): not a field model"
            )
        if data is not None and data.name.startswith("benchmark:") and not demo:
            # trait heads (and usually the teacher) fitted on generated audio: the
            # runtime must say so whenever it is used, as it does for the demo bundle
            demo = True
            notice = notice or (
                f"trait heads fitted on the procedural benchmark ({data.name}, generated "
                "audio): not a field model"
            )
        out = writer.commit(
            {
                "name": cfg.name,
                "demo": demo,
                "notice": notice,
                "producer": B.Producer(
                    # absolute where local: a bundle travels, "runs/x" means nothing there
                    teacher_checkpoint=absolute(loaded.source),
                    student_architecture=student_meta["architecture"] if student_meta else None,
                    training_run_id=cfg.training_run_id,
                    training_data=absolute(data.name) if data else None,
                    git_commit=provenance["git_commit"],
                    tool_version=_version(),
                ).model_dump(),
                "frontend": fe.to_dict(),
                "window_samples": window,
                "sample_rate": fe.sample_rate,
                "embedding_dim": int(loaded.model.config.projection_dim),
                "audio_encoder": B.AudioEncoderSpec(
                    precision=cfg.precision,
                    quantization=QUANTIZATION_NOTE.get(cfg.precision),
                    macs_per_window=macs(encoder, window),
                    params=int(n_params),
                ).model_dump(),
                "text": B.TextSpec(
                    template=templates[0].value
                    if len(templates) == 1
                    else "ensemble:" + ",".join(t.value for t in templates),
                    taxa_file=B.TAXA,
                    taxon_embeddings_file=B.TAXON_EMBEDDINGS,
                ).model_dump(),
                "traits": traits_spec,
                "parity": figures,
                "gates": gates,
            }
        )
    except BaseException:
        writer.abort()
        raise
    load_bundle(out)  # the writer's own output must pass the loader
    return out


QUANTIZATION_NOTE = {
    "fp16": "CNN body fp16; front-end, input norm, projection and L2 norm fp32",
    "int8": "explicit QDQ on the CNN body: symmetric int8 activations (MinMax on real audio), "
    "per-channel symmetric int8 weights; front-end, input norm, projection and L2 norm fp32; "
    + PRE_PROCESS_NOTE,
}


def _why(name: str, gate: dict) -> str:
    side = ">=" if gate.get("higher", True) else "<="
    why = f"{name}: {gate['measured']:.4f}, needs {side} {gate['threshold']} ({gate['what']})"
    return f"{why} [{gate['diagnosis']}]" if "diagnosis" in gate else why


def _gate(measured: float, threshold: float, what: str, on: str, higher: bool = True) -> dict:
    passed = measured >= threshold if higher else measured <= threshold
    return {
        "measured": float(measured),
        "threshold": threshold,
        "higher": higher,
        "passed": bool(passed),
        "what": what,
        "on": on,
    }


def _reduce_precision(cfg, fp32_path, out_path, teacher, text_emb, window, sr) -> dict:
    """Quantize to cfg.precision and measure it against fp32 and the teacher on real
    audio not used for calibration."""
    import torch

    from export import quantize as Q

    option, source = _calibration_source(cfg)
    n_calib, n_check = audio_needed(cfg.precision, cfg.calibration_windows)
    calib, held = _calibration_and_gate_windows(
        Path(source), window, sr, n_calib, cfg.gate_windows, option
    )
    if len(held) < n_check:
        # the early check counted files; some did not decode or were under 0.1 s
        raise Q.CalibrationError(
            _too_little_audio(cfg, len(calib) + len(held), "usable windows", n_calib, n_check)
        )
    if cfg.precision == "int8":
        Q.to_int8(fp32_path, out_path, calib)
    else:
        Q.to_fp16(fp32_path, out_path)
    ref, got = Q.embed(fp32_path, held), Q.embed(out_path, held)
    with torch.no_grad():
        teach = torch.cat(
            [teacher(torch.from_numpy(held[i : i + 16])) for i in range(0, len(held), 16)]
        ).numpy()
    vs_fp32 = Q.agreement(ref, got, text_emb)
    vs_teacher = Q.agreement(teach, got, text_emb)
    unit = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    spread = float((unit @ unit.T)[~np.eye(len(unit), dtype=bool)].mean())
    on = f"{len(held)} real windows of {source}" + (
        f" (calibrated on {len(calib)} others)" if n_calib else ""
    )
    p = cfg.precision
    top1 = _gate(vs_fp32["top1_agreement"], MIN_TOP1_AGREEMENT, "species top-1 agreement", on)
    top1.update({k: vs_fp32[k] for k in MARGIN_FIGURES})  # flat: the manifest's gate schema
    if not top1["passed"] and vs_fp32["windows_that_can_flip"] > 0.5:
        top1["diagnosis"] = (
            f"the fp32 model's top-1 margins are smaller than the score changes {p} makes "
            f"(median {vs_fp32['median_top1_margin']:.4f} vs {vs_fp32['median_score_change']:.4f}) "
            f"in {vs_fp32['windows_that_can_flip']:.0%} of windows: this model makes no clear "
            "species decision to keep; a teacher with real margins is needed, not another "
            "quantizer setting"
        )
    return {
        f"{p} vs fp32 top-1 agreement": top1,
        f"{p} vs fp32 mean cosine": _gate(
            vs_fp32["mean_cosine"], MIN_MEAN_COSINE, "mean embedding cosine", on
        ),
        "fp32 embedding spread": _gate(
            spread,
            MAX_SPREAD_COSINE,
            "mean pairwise cosine between windows (agreement is void above it)",
            on,
            higher=False,
        ),
        f"{p} vs teacher (reported)": {
            "measured": vs_teacher["top1_agreement"],
            "mean_cosine": vs_teacher["mean_cosine"],
            "passed": True,
            "what": "species top-1 agreement with the fp32 teacher (no threshold)",
            "on": on,
        },
    }


def _student_gates(student, teacher, windows: np.ndarray, on: str, precision: str) -> dict:
    """Does the student follow its teacher on real audio, beyond what one constant
    embedding would? A collapsed distillation maps every window to one point and still
    scores the teacher's mean direction (cosine 0.5-0.6 on the demo teacher)."""
    import torch

    with torch.no_grad():
        s, t = (
            torch.cat(
                [m(torch.from_numpy(windows[i : i + 16])) for i in range(0, len(windows), 16)]
            )
            .float()
            .numpy()
            for m in (student, teacher)
        )
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    # the best one constant unit vector can do: the norm of the teacher's mean
    baseline = float(np.linalg.norm(t.mean(axis=0)))
    follows = _gate(
        float(np.sum(s * t, axis=1).mean()),
        round(baseline + MIN_GAIN_OVER_CONSTANT, 4),
        "mean cosine to the teacher's embedding of the same window, above what one fixed "
        "embedding scores (constant_embedding_baseline): below it the student has not "
        "learned its teacher; distil it (longer) from this checkpoint",
        on,
    )
    follows["constant_embedding_baseline"] = baseline
    gates = {"student vs teacher": follows}
    if precision == "fp32" and len(s) > 1:  # fp16/int8 gate the spread on their own windows
        spread = float((s @ s.T)[~np.eye(len(s), dtype=bool)].mean())
        gates["student embedding spread"] = _gate(
            spread,
            MAX_SPREAD_COSINE,
            "mean pairwise cosine between windows: above it the student maps every window "
            "to one point (a collapsed distillation); distil longer or with more audio",
            on,
            higher=False,
        )
    return gates


# Calibration and gate windows are drawn from the folder in this fixed shuffled order:
# field folders are named by species or site, and taken in name order the first 64
# recordings (bats, bears, birds...) calibrated the int8 ranges while the gates were
# judged on the rest (killer whale calls), neither set representing the folder.
CALIBRATION_ORDER_SEED = 0


def _calibration_and_gate_windows(
    folder: Path, window: int, sr: int, n_calib: int, n_gate: int, option: str = "audio"
) -> tuple[np.ndarray, np.ndarray]:
    """(calibration windows, held-out gate windows): one window per recording, the
    recordings in a fixed shuffled order, so both sets span the whole folder."""
    windows = _audio_windows(folder, window, sr, n_calib + n_gate, option, shuffle=True)
    return windows[:n_calib], windows[n_calib:]


def _audio_windows(
    folder: Path, window: int, sr: int, limit: int, option: str = "audio", shuffle: bool = False
) -> np.ndarray:
    """One window from the start of each recording (repeat-padded if shorter); the
    recordings in name order, or in a fixed shuffled one."""
    from animalclap_edge.audio.decode import AudioError, read_all
    from animalclap_edge.contracts.frontend import repeat_pad

    if not folder.is_dir():
        raise ValueError(f"{option} {folder}: not a folder of recordings")
    files = audio_files(folder)
    if shuffle:
        order = np.random.default_rng(CALIBRATION_ORDER_SEED).permutation(len(files))
        files = [files[i] for i in order]
    out: list[np.ndarray] = []
    for p in files:
        if len(out) >= limit:
            break
        try:
            x = read_all(p, sr)
        except AudioError:
            continue
        if len(x) >= sr // 10:
            out.append(repeat_pad(x, window)[:window].astype(np.float32))
    return np.stack(out) if out else np.zeros((0, window), np.float32)


def _fit_heads(writer, encoder, data, window, cfg: ExportConfig, progress: bool) -> dict:
    schema: TraitSchema = data.schema
    rng = np.random.default_rng(0)
    items = data.items
    if len(items) > cfg.max_trait_items:
        items = [
            items[i] for i in sorted(rng.choice(len(items), cfg.max_trait_items, replace=False))
        ]
    emb = embed_items(encoder, data, items, window, desc="trait probe", progress=progress)
    species = [it.species_id for it in items]
    targets, known = schema.encode(data.traits, species)
    tr, te = group_split([it.group for it in items], 0.2, seed=0)
    held_out = f"scored on {len(te)} held-out site-days"
    if len(te) == 0 or len(tr) == 0:
        # Too few site-days to hold any out: the scores below are training fit, and
        # the manifest says so.
        tr = te = np.arange(len(items))
        held_out = "scored on its own training recordings (too few site-days to hold out)"
    weight, bias = fit_trait_heads(emb[tr], targets[tr], known[tr], schema)
    # groups: the baseline shuffles trait rows across species, as traits are per species
    groups = [species[i] for i in te]
    scores = score_trait_heads(
        emb[te], targets[te], known[te], schema, weight, bias, targets[tr], known[tr], groups
    )
    writer.write_json(B.TRAIT_SCHEMA, schema.to_dict())
    writer.write_heads(B.TRAIT_HEADS, weight, bias)
    return B.TraitsSpec(
        fitted_on=f"{data.name}: {len(tr)} recordings, {held_out}",
        scores=scores,
    ).model_dump()


def _parity_windows(cfg: ExportConfig, data, window: int, sr: int) -> tuple[np.ndarray, str]:
    from animalclap_edge.contracts.frontend import repeat_pad

    out: list[np.ndarray] = []
    if cfg.parity_audio:
        out = list(
            _audio_windows(Path(cfg.parity_audio), window, sr, cfg.parity_windows, "--parity-audio")
        )
        source = f"{len(out)} real recordings from {cfg.parity_audio}"
        if not out:
            raise ExportGateError(
                f"--parity-audio {cfg.parity_audio}: none of its recordings decoded to 0.1 s of audio "
                "or more, so gate 'onnx parity' has nothing to run on"
            )
    elif data is not None:
        for it in data.items[: cfg.parity_windows]:
            out.append(repeat_pad(data.load(it), window)[:window].astype(np.float32))
        source = f"{len(out)} recordings of {data.name}"
    if not out:
        raise ExportGateError(
            "gate 'onnx parity' cannot run: no parity audio (give --parity-audio DIR or --data)"
        )
    return np.stack(out), source


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("animalclap-edge")
    except PackageNotFoundError:
        return "0+unknown"


def dump_summary(path: Path) -> str:
    m = json.loads((path / B.MANIFEST).read_text())
    summary = {
        k: m[k]
        for k in ("bundle_id", "name", "demo", "notice", "embedding_dim", "window_samples")
        if k in m
    }
    traits = m.get("traits")
    summary["traits"] = (
        f"{len(traits.get('scores', {}))} trait heads, fitted on {traits.get('fitted_on')}"
        if traits
        else "none: the --data given (if any) has no trait table (traits.csv), so the "
        "runtime reports species only"
    )
    summary.update({k: m[k] for k in ("parity", "gates") if k in m})
    return json.dumps(summary, indent=2)
