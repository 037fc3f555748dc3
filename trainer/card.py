"""The model card: a short Markdown page a person reads before promoting or serving a version."""

from __future__ import annotations

from typing import Any

from .export import VersionConfig

# The settings each model type reads (beyond embeddingDim); the rest of model.* does not apply to it.
_DEEP = ("denseLayers", "dropout", "batchNorm")
_SETTINGS: dict[str, tuple[str, ...]] = {
    "lr": (),
    "fm": (),
    "ffm": (),
    "dcn_v2": ("crossLayers", *_DEEP),
    "fibinet": ("bilinearType", "senetReduction", *_DEEP),
    "two_tower": ("userGroups", "temperature", "topK", *_DEEP),
    "fm_recall": ("userGroups", "topK"),
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_card(
    config: VersionConfig,
    trainjob: str,
    namespace: str,
    metrics: dict[str, Any],
    facts: dict[str, Any],
    plan: dict[str, Any],
) -> str:
    """Markdown for one model version. `facts`: data versions, rows, steps, world size, optimiser, created."""
    m = config.model
    lines = [
        f"# {trainjob} — model version {config.version}",
        "",
        f"*{config.task.capitalize()} model `{m.type}`, trained by TrainJob `{namespace}/{trainjob}` "
        f"on {facts.get('createdAt', '')}.*",
        "",
        "## Intended use",
        "",
    ]
    if config.task == "ranking":
        lines.append(
            "Scores candidate items for a user in context: the output is the probability of the "
            "benchmark label (click with enough dwell) for rows shaped like the FeatureSet below."
        )
    else:
        lines.append(
            "Retrieves candidate items: a user embedding is matched against the stored item index by inner "
            "product. Scores are for ranking candidates of one user, not calibrated probabilities."
        )
    lines += [
        "Inputs must go through the stored feature spec (`features/`), exactly as in training.",
        "",
        "## Data",
        "",
        f"- FeatureSet `{facts.get('featureSet')}` version `{facts.get('featureSetVersion')}`",
        f"- SampleSet `{facts.get('sampleSet')}` version `{facts.get('sampleSetVersion')}`",
        f"- training rows {_fmt(facts.get('trainRows'))}, validation rows {_fmt(facts.get('validationRows'))}",
    ]
    if facts.get("warmStartFrom"):
        lines.append(f"- warm-started from model version `{facts['warmStartFrom']}`")
    lines += ["", "## Model", "", "| setting | value |", "|---|---|"]
    wire = m.to_wire()
    for key in ("embeddingDim", *_SETTINGS.get(m.type, ("denseLayers", "dropout", "batchNorm"))):
        lines.append(f"| {key} | {wire.get(key)} |")
    lines += [
        "",
        "| feature | group | ids | dim |",
        "|---|---|---|---|",
        *(f"| {f.name} | {f.group} | {f.num_embeddings:,} | {f.embedding_dim} |" for f in config.inputs.sparse),
        *(f"| {f.name} | {f.group} | dense | 1 |" for f in config.inputs.dense),
        "",
        "## Training",
        "",
        f"- {facts.get('worldSize')} process(es), backend {facts.get('backend')}, "
        f"sharding {facts.get('sharding')} ({len(plan)} tables; plan in `sharding_plan.json`)",
        f"- embedding storage {config.trained_precision}, sparse optimiser {facts.get('sparseOptimizer')}, "
        f"dense optimiser {facts.get('denseOptimizer')}, schedule {facts.get('lrSchedule')}",
        f"- {_fmt(facts.get('steps'))} steps, {_fmt(metrics.get('samplesPerSecond'))} samples/s",
        "",
        "## Validation metrics",
        "",
        "| metric | fp32 | int8 embeddings |",
        "|---|---|---|",
        f"| AUC | {_fmt(metrics.get('auc'))} | {_fmt(metrics.get('aucInt8'))} |",
        f"| logloss | {_fmt(metrics.get('logloss'))} | {_fmt(metrics.get('loglossInt8'))} |",
    ]
    if metrics.get("recallAtK") is not None:
        k = metrics.get("k")
        lines += [
            f"| recall@{k} | {_fmt(metrics.get('recallAtK'))} | – |",
            f"| NDCG@{k} | {_fmt(metrics.get('ndcgAtK'))} | – |",
        ]
    if metrics.get("bayesAuc") is not None:
        lines += ["", f"Bayes-optimal AUC of the validation rows (synthetic data): {_fmt(metrics['bayesAuc'])}."]
    size = metrics.get("embeddingBytes") or {}
    lines += [
        "",
        "## Size",
        "",
        f"Embedding tables: {_fmt(size.get('trained'))} bytes as trained ({config.trained_precision}), "
        f"{_fmt(size.get('int8'))} bytes as int8 (`model_int8.pt`).",
        "",
        "## Limitations",
        "",
        "- Learned from logged behaviour: it reflects what was shown before (position and exposure bias).",
        "- Ids unseen in training fall into the out-of-vocabulary or hash buckets and get generic embeddings.",
        "- Quality holds for data like the validation split; re-evaluate after the data drifts.",
        "",
    ]
    return "\n".join(lines)
