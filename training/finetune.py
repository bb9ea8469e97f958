"""Regional retraining: a global checkpoint, the region's catalogue and recordings,
replay of global data, and a before/after report.

Two routes to a regional model:
- zero-shot (no audio training): a new catalogue gives new text embeddings and a
  new bundle (`animalclap-export bundle --catalogue regional.csv`). Fits when the
  region's species, or their genera and families, are heard in the global data
  and the region has few or no labelled recordings.
- fine-tuning (this module): fits when the region has labelled recordings
  (tens per species) and its species or soundscapes are poorly served: species
  far from anything in the global data, local dialects, unusual recorders or
  noise. Replay keeps the global species from being forgotten; the report shows
  what the region gained and what the global benchmark lost.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from training.identity import with_absolute_paths
from training.pretrain.config import PretrainConfig

if TYPE_CHECKING:
    from training.labelled_audio import LabelledSet

# Fine-tuning defaults: a short, gentle schedule on top of pretrained weights.
FINETUNE_DEFAULTS = dict(
    split="seen",
    epochs=5,
    lr=2e-5,
    warmup_steps="auto",  # a tenth of the run: a small region's run is a few steps
    batchnorm="frozen",
    replay_fraction=0.25,
)
# tax+com: the template bundles embed species with by default (export --templates), so
# the figure a recorder meets
QUERIES = ("com", "sci", "tax", "tax+com")
# report_on's per-recording outcomes, kept out of finetune_report.json: finetune turns
# them into each change's interval
HITS = "_hits"
# Fewer optimizer steps than this, and a regional change within chance, is said to be a
# short run rather than a verdict: in a trial on 57 real files at the defaults (5 epochs
# of one step, lr 2e-5) nothing changed, where a longer run gained clearly. Where the
# note starts, not a measured optimum.
SHORT_RUN_STEPS = 100
# the report's rows: (key in the changes and the hits, label)
ROWS = (
    ("regional", "regional held-out"),
    ("unseen", "global, unseen species"),
    ("seen_val", "global, seen species (val)"),
)


def report_on(
    checkpoint: str,
    cfg: PretrainConfig,
    out: Path,
    progress: bool,
    regional: LabelledSet | None = None,
    replayed: LabelledSet | None = None,
    kept: Path | None = None,
    write: bool = True,
) -> dict:
    """Regional held-out accuracy among the regional species; global unseen and seen
    accuracy on the replay data's zero-shot split (`kept`, the replay_split.json the
    run trained with, where it has one; else the one cfg.init was trained with, where
    its run folder shows it). `regional` and `replayed`: cfg.data and cfg.replay
    already opened (a paper-size replay index takes seconds to open), else opened here.
    In a process group every rank calls it: each embeds a share of the recordings, and
    only where `write` are files written."""
    from animalclap_edge.contracts.prompts import Template
    from training.devices import resolve_device
    from training.evaluate import EvalConfig, evaluate
    from training.labelled_audio import open_labelled
    from training.model import AudioEncoder, load_clap
    from training.pretrain.mixed import replay_split
    from training.train import make_split, validate_seen

    queries = tuple(Template(q) for q in QUERIES)

    # this process's GPU (torchrun's LOCAL_RANK) where there is one: a paper-size
    # global split is hours of HTS-AT on a CPU
    loaded = load_clap(checkpoint, resolve_device("auto"))
    encoder = AudioEncoder(loaded.model, loaded.frontend, mode="fft")
    window = round(3.0 * loaded.frontend.sample_rate)
    if regional is None:
        regional = open_labelled(cfg.data)
    split = make_split(regional, "seen", cfg.seed, cfg.val_fraction)
    val = [regional.items[i] for i in split.val]
    seen = validate_seen(loaded, encoder, regional, val, window, progress, queries, keep_hits=True)
    # whether each recording was right, per row and query: the changes' intervals
    hits = {"regional": seen.pop("hits", None)}
    if hits["regional"]:
        hits["regional"]["species"] = tuple(it.species_id for it in val)
    held = {it.species_id for it in val}
    recorded = {it.species_id for it in regional.items}
    res: dict = {
        "regional": {
            "recordings": len(val),
            "held_out_species": len(held),
            # recorded, but every site-day of theirs drew training: the row says nothing
            # of them; and catalogue species with no recording at all
            "not_held_out": sorted(recorded - held),
            "not_recorded": sorted(set(regional.catalogue.ids) - recorded),
            "species": len(regional.catalogue),
            "site_days": len({it.group for it in regional.items}),
            "val_fraction": cfg.val_fraction,
            **seen,
        },
        HITS: hits,
    }
    if cfg.replay:
        data = replayed if replayed is not None else open_labelled(cfg.replay)
        # the split the training replayed: cfg.init's own, before and after alike
        gsplit, _ = replay_split(data, cfg.replay, cfg.init, cfg.seed, cfg.val_fraction, kept)
        gsplit, trained = unseen_not_regional(gsplit, data, regional)
        res["global"] = {"unseen_trained_regionally": trained}
        if gsplit.test_species:
            cfg_eval = EvalConfig(seed=cfg.seed, maps=False)
            ev = evaluate(
                loaded, data, gsplit, out, cfg_eval, progress, keep_hits=True, write=write
            )
            res["global"]["unseen"] = {q: ev["unseen"][q] for q in QUERIES}
            hits["unseen"] = {"ids": ev["hits"]["ids"], **ev["hits"]["unseen"]}
        gval = [data.items[i] for i in gsplit.val]
        gseen = validate_seen(
            loaded, encoder, data, gval, window, progress, queries, keep_hits=True
        )
        hits["seen_val"] = gseen.pop("hits", None)
        res["global"]["seen_val"] = gseen
    return res


def unseen_not_regional(split, data, regional) -> tuple:
    """The global zero-shot split with the unseen species that the region also records
    taken out of its test side, and their ids: fine-tuning trains on every regional
    species, and on every regional recording, background callers included, so those are
    no longer unseen, and reporting them as such would be a leak (the "global, unseen"
    row read as zero-shot accuracy)."""
    from dataclasses import replace

    heard = {it.species_id for it in regional.items}
    heard.update(b for it in regional.items for b in it.background)
    trained = sorted(set(split.test_species) & heard)
    if not trained:
        return split, []
    gone = set(trained)
    return (
        replace(
            split,
            test=[i for i in split.test if data.items[i].species_id not in gone],
            test_species=[s for s in split.test_species if s not in gone],
        ),
        trained,
    )


def finetune(cfg: PretrainConfig, progress: bool = True) -> dict:
    """Train from cfg.init on cfg.data with replay of cfg.replay; write the report."""
    from training.labelled_audio import open_labelled
    from training.model import check_checkpoint_path
    from training.pretrain.dist import barrier, close, init_distributed
    from training.pretrain.loop import _refuse_another_run, refuse_changed_data
    from training.train import make_split

    cfg = with_absolute_paths(cfg)
    out = Path(cfg.out)
    # All before the "before" report (minutes at full size), not after it.
    _refuse_another_run(out, cfg)
    check_checkpoint_path(cfg.init)
    # the data's errors, and a changed folder, before minutes of "before" report
    regional = open_labelled(cfg.data)
    resuming = (out / "checkpoints").is_dir()
    if resuming:  # a run to resume: on the data it began with
        split = make_split(regional, cfg.split, cfg.seed, cfg.val_fraction)
        refuse_changed_data(out, cfg.data, split)
    # the replay split the run trains with: a resumed run's own (pretrain keeps it),
    # which a new draw may not match; after training, the one it wrote
    kept = out / "replay_split.json"
    replayed, trained_on = None, regional
    if cfg.replay:
        try:
            replayed = open_labelled(cfg.replay)
        except ValueError as e:
            raise ValueError(f"--replay: {e}") from None
        # ids that clash between the regional and replayed catalogues: refused here, not
        # when training opens the data, after the "before" report
        from training.pretrain.mixed import merge

        trained_on = merge(regional, replayed)
    else:  # said at the start, not found in a report with no global rows
        print(
            "finetune: warning: no --replay: no global recording is replayed, so the global "
            "species may be forgotten, and the report cannot show it (no global rows); give "
            "--replay with the data the checkpoint was trained on",
            flush=True,
        )
    # a name too long for the text tower: refused before the "before" report (hours at
    # paper size), not when training starts after it; `export bundle` would refuse it too
    from training.pretrain.loop import check_prompts_fit

    check_prompts_fit(cfg, cfg.init, trained_on.catalogue)
    # One process group for the reports and the training (pretrain joins it): each rank
    # embeds a share of the reports' recordings, where each used to embed all of them.
    d = init_distributed()
    try:
        report = _train_and_report(cfg, d, progress, regional, replayed, kept, resuming)
        barrier(d)  # the other ranks end once rank 0 has written the report
        return report
    finally:
        close(d)


def _train_and_report(cfg, d, progress, regional, replayed, kept, resuming) -> dict:
    from training.identity import removed_if_left_empty
    from training.pretrain.loop import pretrain

    out = Path(cfg.out)
    shown = progress and d.main
    with removed_if_left_empty(out):
        out.mkdir(parents=True, exist_ok=True)
        before = report_on(
            cfg.init,
            cfg,
            out / "before",
            shown,
            regional,
            replayed,
            kept if resuming else None,
            write=d.main,
        )
    final = pretrain(cfg, progress=progress, fit_batch=True)
    after = report_on(str(final), cfg, out / "after", shown, regional, replayed, kept, write=d.main)
    report = {
        "checkpoint": str(final),
        "init": cfg.init,
        "data": cfg.data,
        "replay": cfg.replay,
        "replay_fraction": cfg.replay_fraction,
        "training": trained_for(out, cfg),
        "before": {k: v for k, v in before.items() if k != HITS},
        "after": {k: v for k, v in after.items() if k != HITS},
        "change": paired_changes(before[HITS], after[HITS]),
        "regional_species": per_species(before[HITS], after[HITS], regional.catalogue),
    }
    if not d.main:
        return report
    (out / "finetune_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (out / "finetune_report.md").write_text(report_md(report), encoding="utf-8")
    if any(report["change"].values()):
        from training.change_plot import plot_changes

        plot_changes(
            report["change"],
            dict(ROWS),
            out / "finetune_report.png",
            "Regional retraining",
            "change in top-1 accuracy, after - before (95% interval, same recordings)",
        )
    return report


def trained_for(out: Path, cfg: PretrainConfig) -> dict:
    """How long the run trained: its optimizer steps (the last in train_log.jsonl),
    epochs and peak lr. A report that gained nothing could not say whether the model
    had barely trained (5 steps) or trained and learnt nothing."""
    steps = 0
    log = out / "train_log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else {}
            steps = max(steps, int(rec.get("step", 0)))
    return {"steps": steps, "epochs": cfg.epochs, "lr": cfg.lr, "max_steps": cfg.max_steps}


def short_run_hint(r: dict) -> str:
    """What to try where the regional change is within chance after a run of fewer than
    SHORT_RUN_STEPS optimizer steps; "" otherwise."""
    t = r.get("training") or {}
    c = r.get("change", {}).get("regional", {}).get("tax+com")
    steps = t.get("steps", 0)
    if not c or not c["n"] or c["lo"] > 0 or c["hi"] < 0 or not 0 < steps < SHORT_RUN_STEPS:
        return ""
    per_epoch = max(1, steps // max(1, t.get("epochs") or 1))
    epochs = -(-SHORT_RUN_STEPS // per_epoch)
    return (
        f"this run took {steps} optimizer steps, so a change within chance may mean it "
        "barely trained, not that fine-tuning cannot help: before choosing the zero-shot "
        f"route, train longer (--set epochs={epochs}: about {SHORT_RUN_STEPS} steps)"
    )


def paired_changes(before: dict, after: dict) -> dict:
    """{row: {query: paired_change}} of the report's rows (compare.paired_changes)."""
    from training.compare import paired_changes as pair

    return pair(before, after, [row for row, _ in ROWS], QUERIES)


def summary(r: dict, out: Path) -> str:
    """The lines a finished run prints: each row's shipped figure before and after, and
    the command that makes a bundle of the new checkpoint."""
    lines = [f"-> {r['checkpoint']}; report: {out / 'finetune_report.md'}"]
    for row, label in ROWS:
        c = r.get("change", {}).get(row, {}).get("tax+com")
        if not c or not c["n"]:
            continue
        b, a = (_figures(r[side], row)["tax+com"]["top1"] for side in ("before", "after"))
        verdict = "gained" if c["lo"] > 0 else "lost" if c["hi"] < 0 else "within chance"
        lines.append(
            f"  {label}, tax+com top-1: {b:.3f} -> {a:.3f} "
            f"(95% interval of the change {c['lo']:+.2f} to {c['hi']:+.2f}: {verdict}; "
            f"{c['n']} recordings)"
        )
    if hint := short_run_hint(r):
        lines.append(f"  note: {hint}")
    reg = r.get("before", {}).get("regional", {})
    if reg.get("recordings") == 0:  # the row a region retrains for: its absence is said
        lines.append(
            f"  regional held-out: not scored, no recording held out (val_fraction "
            f"{reg.get('val_fraction', '?')} of {reg.get('site_days', '?')} site-days drew "
            "none): record more site-days, or --set val_fraction=0.3"
        )
    # --data: the regional catalogue to embed, trait heads where it has traits.csv, and
    # real recordings for the parity gate
    lines.append(
        f"next, a bundle for the recorders: animalclap-export bundle --checkpoint "
        f"{r['checkpoint']} --data {r.get('data', 'REGIONAL_DATA')} --out BUNDLE"
    )
    return "\n".join(lines)


def _figures(side: dict, row: str) -> dict:
    """A report side's figures of one of ROWS, by query."""
    return side["regional"] if row == "regional" else side["global"][row]


def per_species(before: dict, after: dict, catalogue, query: str = "tax+com") -> list[dict]:
    """Each held-out regional species' recordings right at top-1 before and after,
    under the query bundles ship: the species a region should record more of (still
    wrong after) and those the training lost, worst first."""
    b, a = before.get("regional"), after.get("regional")
    if not b or not a or query not in b or query not in a:
        return []
    right_after = dict(zip(a["ids"], a[query], strict=True))
    rows: dict[str, dict] = {}
    for item, sp, hit in zip(b["ids"], b["species"], b[query], strict=True):
        if item not in right_after:
            continue
        name = catalogue[catalogue.index(sp)].common_name
        r = rows.setdefault(sp, {"species_id": sp, "name": name, "n": 0, "before": 0, "after": 0})
        r["n"] += 1
        r["before"] += int(hit)
        r["after"] += int(right_after[item])
    return sorted(rows.values(), key=lambda r: (r["after"] / r["n"], r["after"] - r["before"]))


def _species_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "## Regional species, held-out recordings right at top-1 (tax+com, shipped)",
        "",
        "Worst first: a species still wrong after training needs more (or cleaner) "
        "recordings; one that fell was lost to the others.",
        "",
        "| species | recordings | before | after |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} (`{r['species_id']}`) | {r['n']} | {r['before']} | {r['after']} |"
        )
    return lines


def _row(name: str, before: dict, after: dict, change: dict | None = None) -> str:
    cells = []
    for q in QUERIES:
        b, a = before.get(q, {}).get("top1"), after.get(q, {}).get("top1")
        c = (change or {}).get(q)
        if b is None:
            cells.append("-")
        elif c is None or c["n"] == 0:
            cells.append(f"{b:.3f} -> {a:.3f} ({a - b:+.3f})")
        else:
            cell = f"{b:.3f} -> {a:.3f} ({a - b:+.3f}; {c['lo']:+.2f} to {c['hi']:+.2f})"
            cells.append(f"**{cell}**" if c["lo"] > 0 or c["hi"] < 0 else cell)
    return f"| {name} | " + " | ".join(cells) + " |"


def report_md(r: dict) -> str:
    b, a = r["before"], r["after"]
    ch = r.get("change", {})
    t = r.get("training")
    lines = [
        "# Regional retraining: before and after",
        "",
        f"From `{r['init']}` to `{r['checkpoint']}`"
        + (f", replaying {r['replay_fraction']:.0%} from `{r['replay']}`." if r["replay"] else ".")
        + (
            f" Trained {t['steps']} optimizer steps ({t['epochs']} epochs) at a peak lr of "
            f"{t['lr']:g}."
            if t
            else ""
        ),
        "",
        "| top-1 | com | sci | tax | tax+com (shipped) |",
        "|---|---|---|---|---|",
        _row(
            f"regional held-out ({b['regional']['recordings']} recordings of "
            f"{b['regional'].get('held_out_species', '?')} species; "
            f"{b['regional']['species']} in the catalogue: chance "
            f"{1 / max(1, b['regional']['species']):.3f})",
            b["regional"],
            a["regional"],
            ch.get("regional"),
        ),
    ]
    trained = b.get("global", {}).get("unseen_trained_regionally", [])
    if "global" in b:
        if "unseen" in b["global"]:
            lines.append(
                _row(
                    "global, unseen species",
                    b["global"]["unseen"],
                    a["global"]["unseen"],
                    ch.get("unseen"),
                )
            )
        lines.append(
            _row(
                "global, seen species (val)",
                b["global"]["seen_val"],
                a["global"]["seen_val"],
                ch.get("seen_val"),
            )
        )
    if any(ch.values()):
        lines += [
            "",
            "In brackets: the change, then its 95% interval, both models scored on the same "
            "recordings (Newcombe's interval for paired proportions). Where the interval "
            "spans 0 these recordings cannot tell the change from chance; **bold**: a "
            "change they can. Each recording counts as independent; several of one "
            "site-day or individual are not, so the real uncertainty is wider. "
            "`finetune_report.png` shows the same. The regional row's "
            '"before" is what the zero-shot route would give (a bundle of the global '
            "checkpoint with this catalogue, no audio training): where fine-tuning gains "
            "nothing clear of chance there, that route is the simpler one.",
        ]
        if hint := short_run_hint(r):
            lines += ["", f"**A short run**: {hint[0].upper()}{hint[1:]}."]
    if not b["regional"]["recordings"]:
        reg = b["regional"]
        lines += [
            "",
            f"No regional recordings could be held out: val_fraction "
            f"{reg.get('val_fraction', '?')} of {reg.get('site_days', '?')} site-days drew "
            "none (site-days are drawn by hash, so a few of them may give none). Record "
            "more site-days, or `--set val_fraction=0.3`.",
        ]
    if trained:
        lines += [
            "",
            f"{len(trained)} of the global data's unseen species are also regional species "
            "or call in the background of regional recordings, trained on here, so they are "
            "left out of the unseen row"
            + ("" if "unseen" in b.get("global", {}) else ", which had no others")
            + f": {', '.join(trained)}.",
        ]
    reg = b["regional"]
    for key, what in (
        (
            "not_held_out",
            "recorded, but no recording held out (their site-days all drew training), so the regional row says nothing of them",
        ),
        (
            "not_recorded",
            "in the catalogue with no recording: zero-shot only, in training and in the report",
        ),
    ):
        if ids := reg.get(key):
            lines += ["", f"{len(ids)} regional species {what}: {', '.join(ids)}."]
    lines += _species_table(r.get("regional_species", []))
    return "\n".join(lines) + "\n"


def finetune_config(source: str | None, overrides: list[str]) -> PretrainConfig:
    """Fine-tuning defaults <- the YAML file <- key=value overrides."""
    from training.pretrain.config import load_config

    return load_config(source, overrides, defaults=FINETUNE_DEFAULTS)
