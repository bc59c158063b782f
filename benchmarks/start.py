"""Where the corpus benchmarks start: the default extract settings, the corpus and its concepts, the bundled
model on the CPU, and the layers parsed against it."""

from __future__ import annotations

from dataclasses import dataclass

from amygdala_tl.corpus import Corpus, load_corpus, select_concepts
from amygdala_tl.layers import parse_layers
from amygdala_tl.model import LoadedModel, load_model
from amygdala_tl.model_spec import resolve_model_spec
from amygdala_tl.pipelines.extract import ExtractConfig


@dataclass
class BenchStart:
    default: ExtractConfig
    corpus: Corpus
    concepts: list[str]
    model: LoadedModel
    layers: list[int]


def bench_start(corpus_dir: str, layers: str | None) -> BenchStart:
    default = ExtractConfig()
    corpus = load_corpus(corpus_dir)
    model = load_model(resolve_model_spec(None), device="cpu")
    return BenchStart(default, corpus, select_concepts(corpus, default.min_positives), model, parse_layers(layers, model.facts.n_layers))
