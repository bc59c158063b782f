"""Steering on the bundled model: a concept's vector raises its own readout at later layers."""

from __future__ import annotations

import pytest

from amygdala_tl.pipelines.extract import ExtractConfig, run_extract
from amygdala_tl.pipelines.steer import measure, steer

from ..conftest import first_sessions_corpus

pytestmark = pytest.mark.integration


def test_steering_toward_a_concept_raises_its_own_readout_most(bundled, starter_corpus, tmp_path):
    result = run_extract(ExtractConfig(output_dir=tmp_path, corpus=starter_corpus, layers="10,16,22", heads=False), loader=lambda *a, **k: bundled)
    baselines = [s.text for s in first_sessions_corpus().stories if s.is_baseline]
    shifts = measure(bundled, result.readout, baselines, result.readout.concepts, layer=10, alpha=4.0).to_json()
    rows = shifts["concepts"].values()
    own = sum(r["own_shift"] for r in rows) / len(rows)
    others = sum(r["others_mean_shift"] for r in rows) / len(rows)
    assert shifts["read_at"] == [16, 22] and own > others
    assert sum(r["rank_of_own"] == 1 for r in rows) >= len(rows) // 2

    text = steer(bundled, result.readout, "calm", 10, 4.0, "The morning train was", max_new_tokens=8).to_json()
    assert text["unsteered"] != text["steered"] and text["added_norm"] > 0
