"""Zero-shot evaluation on unseen species: the paper's Table 3/4 figures and Fig. 2/3.

For a checkpoint and the split its training run used:
- top-1/top-5 accuracy of the unseen test species' recordings, queried with the Com,
  Sci and Tax prompts (the paper's) and the Sci+Com and Tax+Com ones (what bundles
  ship: `animalclap-export bundle` embeds the catalogue with tax+com by default).
  Candidates are the unseen species ("unseen", the paper's setting) and, harder,
  every species in the catalogue ("all");
- Tax queries with the taxonomy shuffled, for the ordered-vs-shuffled ablation;
- for wrong top-1 predictions, the share still right at genus, family, order and
  class, against the exact chance share;
- a t-SNE map of the test audio embeddings coloured by class, order, family and genus.

Each recording is embedded from one centred window (3 s by default, the streaming
window), repeat-padded as CLAP does. The same code runs on a benchmark or on a folder
of real recordings, with any transformers CLAP checkpoint.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from animalclap_edge.contracts.catalogue import Catalogue
from animalclap_edge.contracts.prompts import Template, render
from training.devices import EmbedFeed
from training.embed_audio import embed_items
from training.labelled_audio import LabelledSet
from training.metrics import (
    RANK_CHUNK,
    embedding_map,
    proportion_ci,
    similarity_ranks_and_predictions,
    taxonomic_error_profile,
    top_columns,
)
from training.model import AudioEncoder, LoadedClap, text_embeddings
from training.splits import ZeroShotSplit

# The paper's three, then the combined prompts a recorder's bundle ships with: the
# figure a user meets is the shipped prompt's, not the best of the paper's.
QUERY_TEMPLATES = (Template.COM, Template.SCI, Template.TAX, Template.SCI_COM, Template.TAX_COM)
SHUFFLED_TAX = "tax-shuffled"  # Tax prompts with the ranks in a random order
N_SHUFFLES = 5  # shuffled Tax query embeddings averaged per species
# the query whose ranked species predictions.csv lists: what a bundle ships by default
SHIPPED_QUERY = Template.TAX_COM.value
PREDICTIONS_TOP = 5


@dataclass(frozen=True)
class EvalConfig:
    window_seconds: float = 3.0
    maps: bool = True
    seed: int = 0
    # batch size and window-reading workers; None: EmbedFeed.for_device of the model's
    feed: EmbedFeed | None = None


def query_embeddings(
    loaded: LoadedClap, catalogue: Catalogue, species: list[str], query: str, seed: int = 0
) -> np.ndarray:
    """(len(species), D) normalised text embeddings for one query kind."""
    sps = [catalogue[catalogue.index(s)] for s in species]
    if query == SHUFFLED_TAX:
        rng = random.Random(seed)
        embs = [
            text_embeddings(loaded, [render(sp, Template.TAX, rng) for sp in sps]).numpy()
            for _ in range(N_SHUFFLES)
        ]
        mean = np.mean(embs, axis=0)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)
    prompts = [render(sp, Template.parse(query)) for sp in sps]
    return text_embeddings(loaded, prompts).numpy()


def zero_shot_scores(
    audio: np.ndarray,
    true_species: list[str],
    candidates: list[str],
    text: np.ndarray,
    catalogue: Catalogue,
    chunk: int = RANK_CHUNK,
) -> dict:
    """audio (N, D), text (len(candidates), D) -> top-1/top-5, the error profile,
    "hits": whether each recording was right at top-1, (N,) bools, and "ranks": each
    true species' rank, (N,) ints, 0 = top-1. Scored `chunk`
    recordings at a time: the "all" pool of a paper-size split is 70k x 6,823."""
    index = {s: i for i, s in enumerate(candidates)}
    labels = np.array([index[s] for s in true_species], dtype=np.int64)
    # ties count against the true label in the prediction as in top-1: argmax alone
    # took the lowest index, so a tie could be wrong for top-1 and right for the profile
    r, predicted = similarity_ranks_and_predictions(audio, text, labels, chunk)
    n, c = len(labels), len(candidates)
    pred = [candidates[i] for i in predicted]
    return {
        "n": len(labels),
        "candidates": len(candidates),
        "top1": float(np.mean(r < 1)),
        "top1_ci": proportion_ci(int(np.sum(r < 1)), n),
        "hits": tuple(bool(h) for h in r < 1),
        "ranks": tuple(int(x) for x in r),
        "top5": float(np.mean(r < 5)),
        "chance_top1": 1.0 / c,
        "chance_top5": min(5, c) / c,
        "errors": taxonomic_error_profile(
            np.array(pred), np.array(true_species), catalogue, candidates
        ),
    }


def evaluate(
    loaded: LoadedClap,
    data: LabelledSet,
    split: ZeroShotSplit,
    out_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    progress: bool = True,
    audio_encoder=None,
    split_source: str = "given by the caller",
    keep_hits: bool = False,
    write: bool = True,
) -> dict:
    """Write eval.json, eval.md and embedding_map.png under out_dir; return the results.

    `keep_hits`: the results also hold "hits", whether each test recording was right
    at top-1 ({"ids": recording ids, pool: {query: (bool, ...)}}), so that two models
    can be compared on the same recordings; left out of eval.json (a paper-size
    split's would be megabytes of it).

    `audio_encoder` (waveform -> normalised embedding) replaces the checkpoint's own
    audio tower, e.g. a distilled student scored against the teacher's text side.
    `split_source`: where the split came from (its file, or a fresh draw), written
    down with it: a fresh split can hold species the checkpoint trained on.
    `write=False`: the results only, no file (a torchrun job's ranks but rank 0)."""
    split.check_items(data.items)
    if not split.test_species:
        raise ValueError(
            "the split has no unseen test species (trained with --split seen?); "
            "zero-shot evaluation needs a zeroshot split"
        )
    out = Path(out_dir)
    if write:
        out.mkdir(parents=True, exist_ok=True)
    encoder = audio_encoder or AudioEncoder(loaded.model, loaded.frontend, mode="fft")
    window = round(cfg.window_seconds * loaded.frontend.sample_rate)
    items = [data.items[i] for i in split.test]
    audio = embed_items(encoder, data, items, window, "test audio", progress, cfg.feed)
    true = [it.species_id for it in items]
    pools = {"unseen": list(split.test_species), "all": list(data.catalogue.ids)}
    source = (
        loaded.source
        if audio_encoder is None
        else f"{type(audio_encoder).__name__} + text of {loaded.source}"
    )
    results: dict = {
        "source": source,
        "data": data.name,
        "window_s": cfg.window_seconds,
        "split": {
            "source": split_source,
            "unseen_species": len(split.test_species),
            "params": dict(split.params),
        },
    }
    hits: dict = {"ids": tuple(it.id for it in items)}
    rows: list[dict] = []  # predictions.csv's
    for pool_name, candidates in pools.items():
        results[pool_name], hits[pool_name] = {}, {}
        for q in [t.value for t in QUERY_TEMPLATES] + [SHUFFLED_TAX]:
            text = query_embeddings(loaded, data.catalogue, candidates, q, cfg.seed)
            scores = zero_shot_scores(audio, true, candidates, text, data.catalogue)
            hits[pool_name][q] = scores.pop("hits")
            ranks = scores.pop("ranks")
            results[pool_name][q] = scores
            if q == SHIPPED_QUERY:
                shipped = text, ranks
        if write:
            listed = prediction_rows(hits["ids"], true, pool_name, candidates, audio, *shipped)
            for row, *right in zip(listed, *hits[pool_name].values(), strict=True):
                row.update(
                    {f"top1_{q}": int(h) for q, h in zip(hits[pool_name], right, strict=True)}
                )
            rows += listed
    if write and cfg.maps and len(items) >= 5:
        labels = {
            level: [getattr(data.catalogue[data.catalogue.index(s)], attr) for s in true]
            for level, attr in (
                ("class", "class_"),
                ("order", "order"),
                ("family", "family"),
                ("genus", "genus"),  # unseen species often share a family: a one-colour panel
            )
        }
        embedding_map(
            audio,
            labels,
            out / "embedding_map.png",
            f"unseen test species: {len(items)} recordings, {len(split.test_species)} species",
            seed=cfg.seed,
        )
        results["embedding_map"] = "embedding_map.png"
    if write:
        write_predictions(out / "predictions.csv", rows)
        results["predictions"] = "predictions.csv"
        (out / "eval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        (out / "eval.md").write_text(markdown_report(results), encoding="utf-8")
    return {**results, "hits": hits} if keep_hits else results


def prediction_rows(
    ids: tuple[str, ...],
    true: list[str],
    pool: str,
    candidates: list[str],
    audio: np.ndarray,
    text: np.ndarray,
    ranks: tuple[int, ...],
) -> list[dict]:
    """One row per recording: its true species' rank (1 = top-1, ties counted against
    it as in top-1: zero_shot_scores' "ranks") and score, and the PREDICTIONS_TOP best
    species with their scores, for audio (N, D) against text (len(candidates), D)."""
    index = {s: i for i, s in enumerate(candidates)}
    labels = np.array([index[s] for s in true], dtype=np.int64)
    best, score = top_columns(audio, text, PREDICTIONS_TOP)
    true_score = np.einsum("nd,nd->n", audio, text[labels]) if len(labels) else np.zeros(0)
    rows = []
    for i, rid in enumerate(ids):
        row = {
            "recording_id": rid,
            "species_id": true[i],
            "pool": pool,
            "candidates": len(candidates),
            "query": SHIPPED_QUERY,
            "rank": ranks[i] + 1,
            "score": f"{true_score[i]:.4f}",
        }
        for j in range(PREDICTIONS_TOP):
            has = j < best.shape[1]
            row[f"pred_{j + 1}"] = candidates[best[i, j]] if has else ""
            row[f"score_{j + 1}"] = f"{score[i, j]:.4f}" if has else ""
        rows.append(row)
    return rows


def write_predictions(path: Path, rows: list[dict]) -> None:
    """predictions.csv: every test recording in each pool, to recompute the table's
    figures or pick the recordings to listen to."""
    fields = list(rows[0]) if rows else ["recording_id", "species_id", "pool"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def markdown_report(results: dict) -> str:
    """The accuracy table and the error profile, as Markdown."""
    lines = [
        f"# Zero-shot evaluation: {results['source']}",
        "",
        f"Data: {results['data']}; one centred {results['window_s']:g} s window per recording.",
        *(
            [f"Split: {sp['unseen_species']} unseen species ({sp['source']})."]
            if (sp := results.get("split"))
            else []
        ),
        "",
        "| candidates | query | top-1 | top-1, 95% interval | top-5 | chance top-1 | chance top-5 | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pool in ("unseen", "all"):
        for q, r in results[pool].items():
            lo, hi = r.get("top1_ci", (float("nan"), float("nan")))  # eval.json before it
            lines.append(
                f"| {pool} ({r['candidates']}) | {q} | {r['top1']:.3f} | {lo:.3f}-{hi:.3f} "
                f"| {r['top5']:.3f} | {r['chance_top1']:.3f} | {r['chance_top5']:.3f} "
                f"| {r['n']} |"
            )
    lines += [
        "",
        "The interval is Wilson's, with each recording counted as independent; several "
        "recordings of one site-day or individual are not, so the real uncertainty is "
        "wider. To compare two models on these recordings: `evaluate --against`.",
        *(
            [
                "",
                f"Each recording's ranked species ({SHIPPED_QUERY} query) and whether each "
                f"query got it right at top-1: [{results['predictions']}]"
                f"({results['predictions']}).",
            ]
            if "predictions" in results
            else []
        ),
    ]
    lines += [
        "",
        "Wrong top-1 predictions among unseen species that are still right at each rank",
        "(share, chance share if the wrong species were drawn at random):",
        "",
        "| query | wrong | genus | family | order | class |",
        "|---|---|---|---|---|---|",
    ]
    for q, r in results["unseen"].items():
        e = r["errors"]
        cells = [f"{v['share']:.2f} ({v['chance']:.2f})" for v in e["levels"].values()]
        lines.append(f"| {q} | {e['n_wrong']} | " + " | ".join(cells) + " |")
    if "embedding_map" in results:
        lines += ["", f"![t-SNE of test audio embeddings]({results['embedding_map']})"]
    return "\n".join(lines) + "\n"
