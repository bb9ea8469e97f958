"""`animalclap-export distill`: a student that keeps the teacher's audio-text space.

Data: unlabelled audio (labels, if the set has them, are not used). Each recording
gives `crops_per_recording` windows at offsets fixed by the seed; the teacher embeds
every window once (repeat-padded to its 10 s clip, as CLAP does) and the embeddings
are cached on disk under a key of the teacher and the crop list, so a second
distillation with the same teacher and audio does not run the teacher again.

Loss per window: (1 - cosine(student, teacher)) + `kl_weight` * KL(p_teacher || p_student),
where p = softmax(scale * embedding @ species_text.T) over the catalogue's text
embeddings: the second term keeps the ranking of species that zero-shot
classification reads off, not only the direction of the embedding.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from animalclap_edge.contracts.prompts import Template
from export.checks import check_checkpoint, check_file, check_window, named
from export.student import StudentConfig, StudentEncoder, macs, save_student
from training.labelled_audio import Item, LabelledSet, open_labelled
from training.sampling import group_split


@dataclass
class DistillConfig:
    teacher: str
    audio: str  # any `open_labelled` spec, or a folder of audio files
    out: str
    width: float = 0.4
    window_seconds: float = 3.0
    crops_per_recording: int = 4
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    kl_weight: float = 1.0
    templates: list[str] | None = None  # species text for the KL term; default tax+com
    val_fraction: float = 0.1
    seed: int = 0
    threads: int | None = None
    # A zero-shot split.json: distil only on its train/val recordings, so a student
    # scored on the unseen species never heard them (not even unlabelled).
    exclude_test_of: str | None = None
    device: str = "auto"  # auto: the GPU when one is visible, else cpu; or cpu, cuda, cuda:N
    # bf16: teacher and student forward passes under autocast (GPUs; the log-mel
    # front-end stays fp32). Teacher embeddings cached under bf16 get their own key.
    precision: str = "fp32"
    teacher_batch: int = 32  # windows per teacher call while filling the cache
    workers: int = 2  # DataLoader processes decoding windows (0: in the main process)
    # Replace a student already in `out`; its teacher cache is reused either way.
    overwrite: bool = False

    def check(self) -> torch.device:
        """The device to run on; one-line errors for settings that cannot work."""
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: {self.precision!r} is not one of ('fp32', 'bf16')")
        if self.workers < 0:
            raise ValueError(f"workers must be 0 or more, got {self.workers}")
        for name in ("epochs", "batch_size", "teacher_batch", "crops_per_recording"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        # before the teacher's cache is filled: --window 0 ended in a ZeroDivisionError,
        # 60 s trained a student that bundle then refused, width 0 and a negative lr or
        # KL weight trained (or failed after the cache)
        check_window(self.window_seconds)
        for option, value in (("--width", self.width), ("--lr", self.lr)):
            if not value > 0:
                raise ValueError(f"{option} {value}: give a number above 0")
        if not self.kl_weight >= 0:
            raise ValueError(f"--kl-weight {self.kl_weight}: give 0 (cosine loss only) or more")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(self.device)
        except RuntimeError:
            raise ValueError(
                f"device: {self.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device}: no CUDA GPU is visible; use --device cpu")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device: {self.device!r}: only cpu and cuda are supported")
        return dev


@dataclass(frozen=True)
class Crop:
    item: int
    offset: int


def open_audio(spec: str) -> LabelledSet:
    """A labelled set, or any folder of audio files (unlabelled; one group per file)."""
    path = Path(spec)
    known = path.is_dir() and any(
        (path / f).exists() for f in ("recordings.csv", "benchmark.json", "prepared.json")
    )
    if known or not path.is_dir():
        return open_labelled(spec)
    from animalclap_edge.audio.decode import SUPPORTED_EXTENSIONS, read_all
    from animalclap_edge.contracts.catalogue import Catalogue

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SUPPORTED_EXTENSIONS)
    if not files:
        raise ValueError(f"{path}: no audio files ({', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    items = [Item(str(p), "", str(p), 0.0) for p in files]
    from animalclap_edge.contracts.traits import TraitSchema

    return LabelledSet(
        name=str(path),
        catalogue=Catalogue([], source="none"),
        items=items,
        load=lambda it: read_all(it.id, 48_000),
        traits=None,
        schema=TraitSchema.default(),
    )


def plan_crops(lengths: list[int], window: int, per_recording: int, seed: int) -> list[Crop]:
    """Fixed crop offsets: k uniform offsets per recording (0 for recordings shorter
    than a window, which are repeat-padded)."""
    crops = []
    for i, n in enumerate(lengths):
        rng = np.random.default_rng([seed, i])
        span = max(0, n - window)
        offsets = {0} if span == 0 else {int(o) for o in rng.integers(0, span + 1, per_recording)}
        crops += [Crop(i, o) for o in sorted(offsets)]
    return crops


class CropWindows(torch.utils.data.Dataset):
    """Crop j -> its window (float32, `window` samples), read in a DataLoader worker.

    Only the window's frames are decoded where the audio is a file at 48 kHz (as in
    pretraining); nothing is kept between epochs, so memory does not grow with the
    audio (the paper's 4,225 h would be 2.9 TB decoded)."""

    def __init__(self, data: LabelledSet, crops: list[Crop], window: int):
        self.data, self.crops, self.window = data, crops, window

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        c = self.crops[j]
        return j, self.data.window(self.data.items[c.item], c.offset, self.window)


def _stack(batch: list[tuple[int, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([j for j, _ in batch]), torch.from_numpy(np.stack([w for _, w in batch]))


def window_batches(
    ds: CropWindows, batches: Iterable[list[int]], workers: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(crop indices (B,), windows (B, window)) on `device`, for these batches of crop
    indices, decoded by `workers` processes."""
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_stack,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        # its own generator: a loader otherwise draws its workers' seed from the global
        # RNG, and the student's initial weights would depend on whether the teacher
        # cache was hit (no teacher loader) or filled
        generator=torch.Generator().manual_seed(0),
    )
    for idx, x in loader:
        yield idx.to(device, non_blocking=True), x.to(device, non_blocking=True)


class EpochBatches:
    """Every epoch's batches of the training crops, each epoch in an order drawn from
    (seed, epoch): what one DataLoader iterates for the whole run."""

    def __init__(self, train: Iterable[int], batch: int, epochs: int, seed: int):
        self.train, self.batch, self.epochs, self.seed = list(train), batch, epochs, seed
        self.per_epoch = max(1, len(self.train) // batch)

    def __iter__(self) -> Iterator[list[int]]:
        for epoch in range(self.epochs):
            order = np.random.default_rng([self.seed, epoch]).permutation(self.train)
            for b in range(self.per_epoch):
                yield order[b * self.batch : (b + 1) * self.batch].tolist()

    def __len__(self) -> int:
        return self.per_epoch * self.epochs


def teacher_cache(
    teacher_enc: torch.nn.Module,
    teacher_id: str,
    data: LabelledSet,
    crops: list[Crop],
    window: int,
    folder: Path,
    progress: bool,
    precision: str = "fp32",
    batch: int = 32,
    workers: int = 0,
) -> np.ndarray:
    """(len(crops), D) teacher embeddings, computed once per (teacher, audio, crops,
    precision), on the teacher's device."""
    from tqdm.auto import tqdm

    tag = "" if precision == "fp32" else f"|{precision}"  # fp32 keeps the older caches' keys
    h = hashlib.sha256(f"{teacher_id}|{data.name}|{window}{tag}".encode())
    for c in crops:
        h.update(f"{data.items[c.item].id}:{c.offset};".encode())
    path = folder / f"teacher-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    bar = tqdm(total=len(crops), desc="teacher embeddings (cached)", disable=not progress)
    teacher_enc.eval()
    device = next(teacher_enc.parameters()).device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    batches = [list(range(i, min(i + batch, len(crops)))) for i in range(0, len(crops), batch)]
    windows = window_batches(CropWindows(data, crops, window), batches, workers, device)
    with torch.no_grad(), autocast:
        for idx, x in windows:
            out.append((idx.cpu().numpy(), teacher_enc(x).float().cpu().numpy()))
            bar.update(len(idx))
    bar.close()
    dim = out[0][1].shape[1]
    emb = np.zeros((len(crops), dim), np.float32)
    for rows, e in out:
        emb[rows] = e
    tmp = path.with_suffix(".tmp.npy")
    stored = emb.astype(np.float16)
    np.save(tmp, stored)
    tmp.replace(path)
    return stored.astype(np.float32)  # what a later run reads back: the same student


def distill(cfg: DistillConfig, progress: bool = True) -> dict:
    """Train a student against the cached teacher; save it with its figures."""
    from tqdm.auto import tqdm

    from export.text import species_embeddings
    from training.model import AudioEncoder, load_clap

    device = cfg.check()
    out = Path(cfg.out)
    if (out / "student.json").exists() and not cfg.overwrite:
        raise FileExistsError(
            f"{out} already holds a distilled student; pass --overwrite to replace it "
            "(its teacher cache is reused when the teacher and crops are the same)"
        )
    # every path before the teacher loads (tens of seconds at full size)
    check_checkpoint(cfg.teacher, "--teacher")
    if cfg.exclude_test_of:
        check_file(cfg.exclude_test_of, "--exclude-test-of")
    try:
        data = open_audio(cfg.audio)
    except (ValueError, FileNotFoundError) as e:
        raise named("--audio", cfg.audio, e) from e
    if cfg.exclude_test_of:
        from dataclasses import replace

        from training.splits import ZeroShotSplit

        try:
            split = ZeroShotSplit.from_json(cfg.exclude_test_of)
            split.check_items(data.items)
        except ValueError as e:
            raise named("--exclude-test-of", cfg.exclude_test_of, e) from e
        keep = sorted(split.train + split.val)
        data = replace(data, items=[data.items[i] for i in keep], name=f"{data.name} (no test)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    loaded = load_clap(cfg.teacher)
    fe = loaded.frontend
    window = round(cfg.window_seconds * fe.sample_rate)
    lengths = [
        round(it.duration_s * fe.sample_rate) if it.duration_s > 0 else len(data.load(it))
        for it in data.items
    ]
    crops = plan_crops(lengths, window, cfg.crops_per_recording, cfg.seed)
    # Counted on the CPU copy, before the teacher moves to the device.
    teacher_macs = macs(AudioEncoder(loaded.model, fe, mode="dft"), window)
    catalogue = data.catalogue if len(data.catalogue) else None
    text = None
    if catalogue is not None:
        templates = [Template.parse(t) for t in (cfg.templates or ["tax+com"])]
        text = torch.from_numpy(species_embeddings(loaded, catalogue, templates)).to(device)
    scale = float(min(100.0, math.exp(loaded.model.logit_scale_a.item())))
    teacher = AudioEncoder(loaded.model, fe, mode="fft").to(device)
    target = teacher_cache(
        teacher,
        _teacher_id(cfg.teacher),
        data,
        crops,
        window,
        out / "teacher_cache",
        progress,
        cfg.precision,
        cfg.teacher_batch,
        cfg.workers,
    )
    teacher.cpu()  # the student gets the device's memory
    target_on = torch.from_numpy(target).to(device)

    groups = [data.items[c.item].group for c in crops]
    tr, va = group_split(groups, cfg.val_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)  # the student's initial weights, whatever ran before
    student = StudentEncoder(
        StudentConfig(width=cfg.width, embedding_dim=target.shape[1], n_mels=fe.n_mels),
        fe,
        mode="fft",
    ).to(device)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plan = EpochBatches(tr, cfg.batch_size, cfg.epochs, cfg.seed)
    steps_per_epoch, total = plan.per_epoch, len(plan)
    windows = CropWindows(data, crops, window)

    def loss_fn(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = s.float()  # the loss in fp32 under bf16 autocast
        loss = (1 - (s * t).sum(-1)).mean()
        if text is not None and cfg.kl_weight:
            ls, lt = scale * s @ text.T, scale * t @ text.T
            loss = loss + cfg.kl_weight * F.kl_div(
                F.log_softmax(ls, -1), F.log_softmax(lt, -1), log_target=True, reduction="batchmean"
            )
        return loss

    log = open(out / "distill_log.jsonl", "w", encoding="utf-8")  # noqa: SIM115 - closed below
    bar = tqdm(total=total, desc="distill", disable=not progress)
    t0, step = time.monotonic(), 0
    try:
        for idx, x in window_batches(windows, plan, cfg.workers, device):
            lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for g in opt.param_groups:
                g["lr"] = lr
            student.train()
            with autocast:
                emb = student(x)
            loss = loss_fn(emb, target_on[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch = step // steps_per_epoch
            step += 1
            log.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item()}) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    finally:
        bar.close()
        log.close()

    figures = agreement(student, windows, target, va, text, cfg.workers, device)
    student_export = StudentEncoder(student.cfg, fe, mode="dft")
    student_export.load_state_dict(student.state_dict())
    student_macs = macs(student_export, window)
    figures.update(
        {
            "teacher": loaded.source,
            "teacher_weights_sha256": weights_digest(cfg.teacher),
            "audio": data.name,
            "crops": len(crops),
            "train_crops": len(tr),
            "val_crops": len(va),
            "steps": step,
            "minutes": round((time.monotonic() - t0) / 60, 2),
            "student_params": sum(p.numel() for p in student.parameters()),
            "student_macs_per_window": student_macs,
            "teacher_macs_per_window": teacher_macs,
            "mac_ratio": round(teacher_macs / student_macs, 2),
            "window_seconds": cfg.window_seconds,
            "device": str(device),
            "precision": cfg.precision,
        }
    )
    save_student(student_export, out, {"distill": figures, "settings": asdict(cfg)})
    return figures


@torch.no_grad()
def agreement(
    student,
    windows: CropWindows,
    target: np.ndarray,
    idx,
    text,
    workers: int = 0,
    device: torch.device | None = None,
) -> dict:
    """Held-out crops: mean cosine to the teacher, and top-1 species agreement."""
    if len(idx) == 0:
        return {"val_note": "no held-out crops (one group): nothing to score"}
    student.eval()
    device = device or torch.device("cpu")
    batches = [list(idx[i : i + 64]) for i in range(0, len(idx), 64)]
    s = np.concatenate(
        [
            student(x).float().cpu().numpy()
            for _, x in window_batches(windows, batches, workers, device)
        ]
    )
    t = target[idx]
    res = {"val_mean_cosine": float(np.mean(np.sum(s * t, axis=1)))}
    if text is not None:
        tx = text.cpu().numpy()
        res["val_top1_agreement"] = float(np.mean((s @ tx.T).argmax(1) == (t @ tx.T).argmax(1)))
    return res


def weights_digest(source: str) -> str | None:
    """sha256 of a local checkpoint's weight files' bytes (None for a hub id): which
    teacher a student learned from, wherever the checkpoint was copied to."""
    path = Path(source)
    if not path.is_dir():
        return None
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _teacher_id(source: str) -> str:
    """The checkpoint and the bytes of its weights, so a retrained teacher gets a new cache."""
    path = Path(source)
    weights = (
        sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")) if path.is_dir() else []
    )
    h = hashlib.sha256(str(path.resolve() if path.exists() else source).encode())
    for w in weights:
        st = w.stat()
        h.update(f"{w.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
