"""Bad input, found before any work: files that disagree with each other, values past a limit, wrong
Python types. Every mistake is one UserError naming the file or value (exit 2 on the command line)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import amygdala_tl.pipelines.heads  # noqa: F401 - imported at collection: a pipeline binds its default loader at import,
import amygdala_tl.pipelines.score  # noqa: F401 - and a test that patches model.load_model must not be the first importer
from amygdala_tl.errors import UserError
from amygdala_tl.formats.readout import MANIFEST_FILE, Readout, build_readout, load_readout
from amygdala_tl.pipelines.extract import ExtractConfig, run_extract

from ..conftest import write_readout


def never_load(*args, **kwargs):
    raise AssertionError("the model must not be loaded for this error")


def swap_first_two(manifest_path: Path) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["concepts"][:2] = manifest["concepts"][1::-1]
    manifest_path.write_text(json.dumps(manifest))


# ---- item 6: the manifest, the safetensors metadata and extract.json agree -----------------------


def test_a_manifest_with_two_concepts_swapped_is_refused(tmp_path):
    write_readout(build_readout(["calm", "afraid", "bored"], [1], torch.randn(1, 3, 8)), tmp_path)
    assert json.loads(load_readout(tmp_path).metadata["concepts"]) == ["calm", "afraid", "bored"]
    swap_first_two(tmp_path / MANIFEST_FILE)
    with pytest.raises(UserError, match="readout.json: its concepts disagree"):
        load_readout(tmp_path)


def test_a_readout_whose_concepts_disagree_with_extract_json_is_refused(starter_corpus, tmp_path, tiny_model):
    from amygdala_tl.pipelines.export import ExportConfig, export_control_vector

    out = tmp_path / "out"
    run_extract(ExtractConfig(output_dir=out, corpus=starter_corpus, layers="1,2", heads=False), loader=lambda *a, **k: tiny_model)
    readout = load_readout(out)
    swapped = [readout.concepts[1], readout.concepts[0], *readout.concepts[2:]]  # same run id, self-consistent files
    metadata = {key: value for key, value in readout.metadata.items() if key != "concepts"}
    write_readout(Readout(swapped, readout.layers, readout.vectors, readout.hidden_size, metadata), out)
    with pytest.raises(UserError, match="disagrees with extract.json"):
        export_control_vector(ExportConfig(vectors=out, concept="calm"))


def test_a_gguf_cut_inside_its_tensor_data_is_refused_before_the_load(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    from amygdala_tl.preflight import gguf_header

    writer = GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    writer.add_block_count(2)
    writer.add_tensor("w", np.ones(256, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_header(tmp_path / "m.gguf")["block_count"] == 2
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "m.gguf").read_bytes()[:-100])
    with pytest.raises(UserError, match=r"cut.gguf is truncated: \d+ bytes, its header describes \d+"):
        gguf_header(tmp_path / "cut.gguf")


# ---- item 12: the Python API takes natural types, and names the argument otherwise ---------------


def test_extract_takes_a_list_of_layers(starter_corpus, tmp_path, tiny_model):
    import amygdala_tl as at

    run = at.extract(starter_corpus, tmp_path / "out", layers=[1, -1], heads=False, loader=lambda *a, **k: tiny_model)
    assert run.readout.layers == [1, 2]


@pytest.mark.parametrize(
    "options, fragment",
    [
        (dict(batch_size="8"), "batch_size must be an integer, got '8'"),
        (dict(max_length=float("nan")), "max_length must be an integer, got nan"),
        (dict(heads="no"), "heads must be True or False"),
        (dict(layers=[1.5]), "layers must be a list of block indices"),
        (dict(layers=7), "layers must be a list of block indices"),
        (dict(cache_dir=3), "cache_dir must be a path"),
        (dict(layer="1"), "unknown option 'layer'"),
    ],
)
def test_extract_refuses_a_wrong_type_by_name_before_any_work(options, fragment, starter_corpus, tmp_path):
    import amygdala_tl as at

    with pytest.raises(UserError, match=fragment):
        at.extract(starter_corpus, tmp_path / "out", loader=never_load, **options)
    assert not (tmp_path / "out").exists()


API_MISTAKES = """
import amygdala_tl as at
calls = [
    lambda: at.load_model("x.gguf"),
    lambda: at.load_model(123),
    lambda: at.register("pooled"),
    lambda: at.load_readout(123),
    lambda: at.Head(-1, 5),
    lambda: at.Head(3, -2),
    lambda: at.Head(1.5, 0),
    lambda: at.Head(True, 0),
]
for call in calls:
    try:
        call()
        print("accepted")
    except Exception as error:
        print(type(error).__name__, error)
print(at.Head(3, 5) == (3, 5), at.Head(3, 5))
"""


def test_api_entry_points_refuse_wrong_types_with_a_user_error():
    """As a user's script meets them: in a plain interpreter, without the test run's type-checking import hook."""
    import os
    import subprocess
    import sys

    from ..conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    lines = subprocess.run([sys.executable, "-c", API_MISTAKES], env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines == [
        "UserError model file not found: x.gguf",
        "UserError model must be a hub id, a model directory or a .gguf path, got 123",
        "UserError register takes a Method(name, fit, summary), got 'pooled'; a plain fit callable goes to extract(method=...)",
        "UserError load_readout takes the path of a directory or file, got 123",
        "UserError Head layer must be a non-negative integer, got -1",
        "UserError Head head must be a non-negative integer, got -2",
        "UserError Head layer must be a non-negative integer, got 1.5",
        "UserError Head layer must be a non-negative integer, got True",
        "True L3H5",
    ]


# ---- docs/checks.md's "checked before the model loads" list (linked from the README), one row per entry
# {corpus}: the starter corpus, {vec}: a readout at layers 1, 2 (no extract.json: the bundled model), {tmp}: scratch.

REMOTE_CODE_CONFIG = '{"model_type": "evil", "num_hidden_layers": 2, "auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}}'
BEFORE_THE_LOAD = {
    # bad or empty paths, options and numbers (NaN and infinities included)
    "missing_corpus": ("extract --corpus {tmp}/nowhere", "corpus directory not found"),
    "empty_corpus": ("extract --corpus {tmp}/emptydir", "corpus directory has neither stories/ nor paired/"),
    "missing_model": ("extract --model {tmp}/nowhere.gguf", "model file not found"),
    "batch_size_0": ("extract --batch-size 0", "--batch-size must be at least 1, got 0"),
    "param_c_nan": ("extract --method logistic_l1 --param c=nan", "--param c of the logistic_l1 method must be a finite positive number"),
    "param_unknown": ("extract --method lda --param c=1", "unknown --param 'c' for the lda method"),
    "alpha_inf": ("steer go --vectors {vec} --concept calm --layer 1 --alpha inf", "--alpha must be a number between"),
    "alpha_1e300": ("steer go --vectors {vec} --concept calm --layer 1 --alpha 1e300", "--alpha must be a number between -100 and 100"),
    "temperature_1e-45": ("steer go --vectors {vec} --concept calm --layer 1 --temperature 1e-45", "--temperature must be 0 (greedy) or"),
    "scale_1e39": ("export --vectors {vec} --concept calm --layers 1 --scale 1e39", "--scale must be a non-zero number within fp32 range"),
    "denoise_k_1000": ("extract --denoise-k 1000", "--denoise-k 1000 is more than the 0 directions the corpus's 1 baseline texts span"),
    "score_top_-1": ("score calm --vectors {vec} --top -1", "--top must be at least 1, got -1"),
    "score_empty": ("score calm  --vectors {vec}", "text 2 is empty"),
    "steer_empty": ("steer  --vectors {vec} --concept calm --layer 1", "the prompt is empty"),
    "detect_length_0": ("heads detect --length 0", "--length must be at least 2"),
    "pooling_unknown": ("extract --pooling median", "unknown --pooling 'median'"),
    "compare_poolings_unknown": ("compare-methods --methods pooled --poolings tail0 -o {tmp}/out", "unknown --poolings 'tail0'"),
    "compare_methods_empty": ("compare-methods --methods , -o {tmp}/out", "--methods is empty"),
    "vectors_missing": ("score calm --vectors {tmp}/vec/typo", "no such readout directory"),
    # --layers empty or out of range (the layer count from config.json or the GGUF header)
    "layers_empty": ("extract --layers ''", "--layers is empty"),
    "layers_30": ("extract --layers 30", "--layers: 30 is out of range for a model with 30 layers"),
    "layers_local": ("extract --layers 3 --model {tmp}/llama", "--layers: 3 is out of range for a model with 3 layers"),
    # --device cuda without CUDA; --device-map that is not a dispatch strategy or a device, or beside --device
    "device_cuda": ("extract --device cuda", "CUDA is not available"),
    "detect_cuda": ("heads detect --device cuda", "CUDA is not available"),
    "ablate_cuda": ("heads ablate --heads L0H0 --prompt x --device cuda", "CUDA is not available"),
    "device_map_nonsense": ("extract --device-map nonsense", "unknown --device-map 'nonsense'"),
    "device_map_and_device": ("extract --device-map auto --device cpu", "exclude each other"),
    # a fake or truncated .gguf, a broken config.json, a model that ships its own code
    "fake_gguf": ("extract --model {tmp}/fake.gguf", "fake.gguf is not a GGUF file"),
    "truncated_gguf": ("extract --model {tmp}/truncated.gguf", "truncated.gguf is not a readable GGUF file"),
    "broken_config": ("extract --model {tmp}/broken", "broken model config"),
    "remote_code": ("extract --model {tmp}/evil", "--trust-remote-code"),
    # a hub id that is not cached, offline or unreachable
    "hub_offline": ("extract --model some-org/some-model", "HF_HUB_OFFLINE"),
    "hub_unreachable": ("extract --model some-org/some-model", "cannot reach 127.0.0.1"),
    # an output path under an existing file or in a directory that cannot be written; export -o naming a directory
    "output_under_file": ("extract -o {tmp}/file/sub", "exists and is not a directory"),
    "output_not_writable": ("extract -o {tmp}/locked/out", "locked is not writable"),
    "cache_not_writable": ("extract --cache-dir {tmp}/locked/cache", "locked is not writable"),
    "export_to_directory": ("export --vectors {vec} --concept calm --layers 1 -o {tmp}/emptydir", "emptydir is a directory"),
    # corpus problems
    "two_concepts": ("extract --corpus {tmp}/twice", "the same text is labelled"),
    "non_utf8_story": ("extract --corpus {tmp}/latin", "not valid UTF-8"),
    "binary_story": ("extract --corpus {tmp}/binary", "binary data?"),
    "fifo_story": ("extract --corpus {tmp}/fifo", "not a regular file"),
    "manifest_unknown_form": ("extract --corpus {tmp}/manifest", "form 'haiku' is not one of"),
    # steer concepts and layers (and the --measure layer); heads ablate heads and --mode
    "steer_concept": ("steer go --vectors {vec} --concept joyful --layer 1", "unknown concept 'joyful'"),
    "steer_layer": ("steer go --vectors {vec} --concept calm --layer 5", "layer 5 is not in the vectors"),
    "generate_concept": ("generate go --vectors {vec} --steer joyful:2", "unknown concept 'joyful'"),
    "generate_layer": ("generate go --vectors {vec} --steer calm:2@5", "layer 5 is not in the vectors"),
    "generate_shown_layer": ("generate go --vectors {vec} --readout --layer 5", "layer 5 is not in the vectors"),
    "generate_alpha": ("generate go --vectors {vec} --steer calm:1e300", "alpha must be a number between -100 and 100"),
    "generate_empty": ("generate  --vectors {vec} --readout", "the prompt is empty"),
    "generate_max_new_tokens_0": ("generate go --vectors {vec} --max-new-tokens 0", "--max-new-tokens must be at least 1, got 0"),
    "sweep_alphas": (
        "steer '' --sweep --vectors {vec} --concept calm --layer 1 --alphas 0,1e300",
        "--alphas: each must be a number between -100 and 100",
    ),
    "sweep_alphas_text": ("steer '' --sweep --vectors {vec} --concept calm --layer 1 --alphas 1,two", "expected numbers separated by commas"),
    "sweep_concept": ("steer '' --sweep --vectors {vec} --concept calm,joyful --layer 1", "unknown concept 'joyful'"),
    "sweep_prompts_missing": ("steer '' --sweep --vectors {vec} --concept calm --layer 1 --prompts {tmp}/nowhere.txt", "nowhere.txt: no such file"),
    "sweep_prompts_latin1": ("steer '' --sweep --vectors {vec} --concept calm --layer 1 --prompts {tmp}/latin1.txt", "latin1.txt: not valid UTF-8"),
    "sweep_prompts_empty": ("steer '' --sweep --vectors {vec} --concept calm --layer 1 --prompts {tmp}/blank.txt", "has no prompt"),
    "sweep_calibration": ("steer '' --sweep --vectors {vec} --concept all --layer 1", "has no calibration.json"),
    "sweep_and_measure": ("steer '' --sweep --measure --vectors {vec} --concept all --layer 1", "--sweep and --measure are two different runs"),
    "steer_measure_layer": ("steer x --vectors {vec} --concept all --layer 2 --measure --corpus {corpus}", "--measure needs exported layers after 2"),
    "ablate_mode": ("heads ablate --heads L0H0 --prompt x --mode foo", "unknown ablation mode 'foo'"),
    "ablate_layer": ("heads ablate --heads L99H0 --prompt x", "head L99H0: layer 99 is out of range for a model with 30 layers"),
    "ablate_head": ("heads ablate --heads L1H9 --prompt x", "head L1H9: head 9 is out of range for a model with 9 heads per layer"),
    # non-UTF-8 --file / --text-file
    "score_file": ("score --vectors {vec} --file {tmp}/latin1.txt", "latin1.txt"),
    "detect_text_file": ("heads detect --text-file {tmp}/latin1.txt", "latin1.txt"),
    # --quality-report / compare-methods: the development test set, the cross-validation folds
    "heldout_copy": ("extract --quality-report --heldout {tmp}/heldout", "h.txt"),
    "heldout_near_copy": ("extract --quality-report --heldout {tmp}/near", "is a near-copy of training story"),
    "compare_heldout_copy": ("compare-methods --methods pooled -o {tmp}/out", "h.txt"),
    "cv_folds": ("extract --quality-report", "too small for grouped cross-validation"),
}
DEFAULT_CORPUS_ARGS = ("extract", "compare-methods")


def make_inputs(tmp: Path, corpus: Path) -> None:
    """The bad files the table's rows name."""
    from ..conftest import write

    bundled = Path(__import__("amygdala_tl").resolve_model_spec(None).location)
    (tmp / "truncated.gguf").write_bytes(bundled.open("rb").read(1 << 20))
    write(tmp / "fake.gguf", "not a model")
    write(tmp / "broken" / "config.json", "{not json")
    write(tmp / "evil" / "config.json", REMOTE_CODE_CONFIG)
    write(tmp / "evil" / "modeling_evil.py", "raise SystemExit('ran')")
    write(tmp / "llama" / "config.json", '{"model_type": "llama", "num_hidden_layers": 3}')
    write(tmp / "file", "x")
    write(tmp / "blank.txt", "\n  \n")
    (tmp / "emptydir").mkdir()
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    story = next((corpus / "stories" / "calm").glob("*.txt")).read_text()
    write(tmp / "twice" / "stories" / "calm" / "a.txt", story)
    write(tmp / "twice" / "stories" / "bored" / "a.txt", story)
    write(tmp / "latin" / "stories" / "calm" / "a.txt", "x").write_bytes(b"caf\xe9")
    write(tmp / "binary" / "stories" / "calm" / "a.txt", "x").write_bytes(b"\x00" * 64)
    write(tmp / "manifest" / "stories" / "calm" / "a.txt", story)
    write(tmp / "manifest" / "writers.tsv", "writer\tset\tbrief\nw1\ttraining\tone\n")
    write(tmp / "manifest" / "manifest.tsv", "path\twriter\tform\nstories/calm/a.txt\tw1\thaiku\n")
    write(tmp / "heldout" / "calm" / "h.txt", story)
    write(tmp / "heldout" / "_neutral" / "n.txt", "The bus came at nine and the street was wet.")
    words = story.split()
    write(tmp / "near" / "calm" / "h.txt", " ".join(words[:-1] + ["differently."]))  # one word changed
    shutil.copytree(corpus, tmp / "fifo")
    os.mkfifo(tmp / "fifo" / "stories" / "calm" / "pipe.txt")
    (tmp / "locked").mkdir()
    write_readout(build_readout(["calm", "afraid"], [1, 2], torch.randn(2, 2, 576)), tmp / "vec")


@pytest.mark.parametrize("case", list(BEFORE_THE_LOAD))
def test_every_check_the_readme_lists_fails_before_the_model_loads(case, starter_corpus, tmp_path, monkeypatch):
    import shlex
    import socket

    from typer.testing import CliRunner

    from amygdala_tl.cli import app

    args, fragment = BEFORE_THE_LOAD[case]
    make_inputs(tmp_path, starter_corpus)
    monkeypatch.setattr("amygdala_tl.model._from_pretrained_args", never_load)  # below every loader: no weights are read
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    writable = os.access  # root writes anywhere: the tests stand a read-only directory in by os.access
    monkeypatch.setattr("os.access", lambda path, mode: Path(path).name != "locked" and writable(path, mode))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    if case == "hub_offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if case == "hub_unreachable":
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{sock.getsockname()[1]}")
    if case == "cv_folds":
        folders = lambda self: [s.path.parent.name for s in self.stories]  # noqa: E731 - a concept's stories in one group
        monkeypatch.setattr(
            "amygdala_tl.corpus.load.Corpus.groups", lambda self, by_writer=True: [sorted(set(folders(self))).index(f) for f in folders(self)]
        )
    if case == "compare_heldout_copy":
        shutil.copytree(tmp_path / "heldout", starter_corpus / "heldout")
    argv = shlex.split(args.format(tmp=tmp_path, vec=tmp_path / "vec", corpus=starter_corpus))
    if argv[0] in DEFAULT_CORPUS_ARGS and "--corpus" not in argv:
        argv += ["--corpus", str(starter_corpus)]
    if argv[0] == "extract" and "-o" not in argv:
        argv += ["-o", str(tmp_path / "out")]
    if case in ("score_empty", "steer_empty", "generate_empty"):
        argv.insert(2 if case == "score_empty" else 1, "")
    result = CliRunner().invoke(app, argv)
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("warning:")]  # corpus warnings may precede
    assert result.exit_code == 2 and len(lines) == 1 and fragment in lines[0], result.output
    assert "loading" not in result.output and not (tmp_path / "out").exists()


class Loaded(Exception):
    """Raised below the loader: the command got past every check to the weights."""


@pytest.mark.parametrize(
    "args",
    [
        "extract --corpus {corpus} -o {tmp}/out --model {tmp}/llama",
        "heads detect --corpus {corpus} -o {tmp}/heads --model {tmp}/llama",
        "score calm --vectors {tmp}/vec --model {tmp}/llama",
    ],
    ids=["extract", "heads_detect", "score"],
)
def test_the_checks_before_the_load_run_once_per_command(args, starter_corpus, tmp_path, monkeypatch):
    """The command checks the model (preflight) before its load and hands the loader a spec marked checked:
    load_model does not read the config, or ask the hub, a second time."""
    import shlex

    from typer.testing import CliRunner

    from amygdala_tl import preflight
    from amygdala_tl.cli import app

    from ..conftest import write

    write(tmp_path / "llama" / "config.json", '{"model_type": "llama", "num_hidden_layers": 3}')
    write_readout(build_readout(["calm", "afraid"], [1, 2], torch.randn(2, 2, 576)), tmp_path / "vec")
    read, config_of = [], preflight.model_config
    monkeypatch.setattr("amygdala_tl.preflight.model_config", lambda spec: read.append(spec) or config_of(spec))
    monkeypatch.setattr("amygdala_tl.model._from_pretrained_args", lambda *a, **k: (_ for _ in ()).throw(Loaded()))
    monkeypatch.setenv("AMYGDALA_TL_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, shlex.split(args.format(tmp=tmp_path, corpus=starter_corpus)))
    assert isinstance(result.exception, Loaded), result.output
    assert len(read) == 1
