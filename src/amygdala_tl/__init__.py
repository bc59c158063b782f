"""amygdala-tl: concept readout vectors for a language model's residual stream.

import amygdala_tl as at
run = at.extract("corpus", "out", layers="12,14")     # learn + export (bundled model by default)
scores = run.score(["I kept checking the door."])     # {layer: [n_texts, n_concepts]} as served
trace = run.trace("I kept checking the door.")        # every token, layer and concept (at.trace("out", text) too)
vectors = at.load_readout("out")                      # the exported files, validated
"""

__version__ = "0.1.0"

from .capture import Activations, capture, encode, forward  # noqa: E402
from .circuits.head import Head  # noqa: E402
from .corpus import Corpus, load_corpus, load_heldout  # noqa: E402
from .directions.registry import METHODS, Method, MethodInputs, Param, register  # noqa: E402
from .errors import UserError  # noqa: E402
from .formats.readout import Readout, load_readout, score  # noqa: E402
from .model import LoadedModel, load_model  # noqa: E402
from .model_spec import resolve_model_spec  # noqa: E402
from .pipelines.extract import ExtractConfig, ExtractResult, extract, run_extract  # noqa: E402
from .pipelines.trace import trace  # noqa: E402
from .rundir import RunRecord  # noqa: E402
from .tracing import Trace  # noqa: E402

__all__ = [
    "Activations",
    "Corpus",
    "ExtractConfig",
    "ExtractResult",
    "Head",
    "LoadedModel",
    "METHODS",
    "Method",
    "MethodInputs",
    "Param",
    "Readout",
    "RunRecord",
    "Trace",
    "UserError",
    "capture",
    "encode",
    "extract",
    "forward",
    "load_corpus",
    "load_heldout",
    "load_model",
    "load_readout",
    "register",
    "resolve_model_spec",
    "run_extract",
    "score",
    "trace",
    "__version__",
]
