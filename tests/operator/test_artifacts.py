"""Status fields from what the steps stored, read through the real store API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from recplane.operator.artifacts import Artifacts, model_versions, status_fields, trainjob_fields
from recplane.store import LocalStore, Manifest


def publish(
    store: LocalStore, tmp: Path, kind: str, name: str, version: str, status: dict, minutes: int = 0
) -> Manifest:
    staging = tmp / f"stage-{kind}-{name}-{version}"
    staging.mkdir()
    (staging / "part-0.parquet").write_bytes(b"rows")
    created = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    manifest = Manifest(kind=kind, namespace="team-a", name=name, version=version, status=status, created_at=created)
    return store.publish(staging, manifest)


def test_a_sampleset_status_comes_from_its_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    status = {"trainRows": 900, "validationRows": 100, "positiveRate": 0.12, "phase": "Ready", "bogus": 1}
    published = publish(store, tmp_path, "sampleset", "events", "abc", status)
    art = Artifacts(store)
    latest = art.latest("team-a", "SampleSet", "events")
    assert latest is not None and latest.version == "abc"
    fields = status_fields("SampleSet", latest)
    # Known fields are copied, the operator's own (phase) and unknown ones are not.
    assert fields == {
        "trainRows": 900,
        "validationRows": 100,
        "positiveRate": 0.12,
        "version": "abc",
        "artifactUri": published.uri,
    }


def test_versions_are_listed_oldest_first_and_parsed_from_uris(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish(store, tmp_path, "trainjob", "ranker", "v2", {"metrics": {"auc": 0.71}}, minutes=2)
    publish(store, tmp_path, "trainjob", "ranker", "v1", {"metrics": {"auc": 0.70}}, minutes=1)
    art = Artifacts(store)
    assert [m.version for m in art.versions("team-a", "TrainJob", "ranker")] == ["v1", "v2"]
    ref = art.parse_uri(store.version_uri("team-a", "trainjob", "ranker", "v2"))
    assert ref is not None and (ref.namespace, ref.kind, ref.name, ref.version) == (
        "team-a",
        "TrainJob",
        "ranker",
        "v2",
    )
    assert art.parse_uri("s3://elsewhere/team-a/trainjob/ranker/v2/") is None
    assert art.delete_all("team-a", "TrainJob", "ranker") > 0
    assert art.versions("team-a", "TrainJob", "ranker") == []


def test_promotion_follows_the_promote_if_rule(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ms = [
        publish(store, tmp_path, "trainjob", "r", "v1", {"metrics": {"auc": 0.70}}, 1),
        publish(store, tmp_path, "trainjob", "r", "v2", {"metrics": {"auc": 0.60}}, 2),
        publish(store, tmp_path, "trainjob", "r", "v3", {"metrics": {"auc": 0.72}}, 3),
    ]
    versions = model_versions(ms, {"minAuc": 0.65, "maxAucDrop": 0.02})
    assert [v["promoted"] for v in versions] == [True, False, True]
    assert "below promoteIf.minAuc" in versions[1]["reason"]
    fields = trainjob_fields(ms, {"minAuc": 0.65})
    assert (fields["latestVersion"], fields["promotedVersion"]) == ("v3", "v3")
    assert fields["metrics"] == {"auc": 0.72}


def test_a_trainers_own_promotion_verdict_wins(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    ms = [
        publish(store, tmp_path, "trainjob", "r", "v1", {"metrics": {"auc": 0.9}, "promoted": False, "reason": "worse"})
    ]
    (v,) = model_versions(ms, {})
    assert v["promoted"] is False and v["reason"] == "worse"
    assert trainjob_fields(ms, {})["promotedVersion"] is None


def test_a_continuous_trainjobs_recorded_verdicts_decide_and_unjudged_versions_wait(tmp_path: Path) -> None:
    from recplane.api.trainjob import PromotionRule
    from recplane.trainer import promotion

    store = LocalStore(tmp_path / "store")
    ms = [
        publish(store, tmp_path, "trainjob", "r", "v1", {"metrics": {"auc": 0.70}}, 1),
        publish(store, tmp_path, "trainjob", "r", "v2", {"metrics": {"auc": 0.71}}, 2),
        publish(store, tmp_path, "trainjob", "r", "v3", {"metrics": {"auc": 0.90}}, 3),
    ]

    def judge(version: str, incumbent_auc: float | None) -> None:
        auc = next(m for m in ms if m.version == version).status["metrics"]["auc"]
        decision = promotion.decide(auc, incumbent_auc, PromotionRule(max_auc_drop=0.0))
        verdict = promotion.Verdict(version, decision.promoted, decision.reason, auc, None, incumbent_auc, "s", "t")
        promotion.record(store, "team-a", "r", verdict)

    judge("v1", None)
    # On the fresh hold-out the promoted v1 scored 0.75, so v2 (0.71 there) is worse, although
    # its stored AUC is above v1's: the recorded verdict, not the rule's guess, stands.
    judge("v2", 0.75)
    art = Artifacts(store)
    verdicts = art.verdicts("team-a", "r")
    fields = trainjob_fields(ms, {"maxAucDrop": 0.0}, verdicts)
    # v3 is stored but not judged yet: it is not listed (nothing announces or serves it early).
    assert [(v["version"], v["promoted"]) for v in fields["versions"]] == [("v1", True), ("v2", False)]
    assert (fields["latestVersion"], fields["promotedVersion"]) == ("v2", "v1")
    assert "0.75" in fields["versions"][1]["reason"]
    assert art.verdicts("team-a", "other") == {}
