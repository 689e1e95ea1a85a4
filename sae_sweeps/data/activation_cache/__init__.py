"""An on-disk cache of LM activations at a hook point, shared by every SAE that trains on the same
(model, hook point, data): one LM pass per sweep instead of one per member. docs/activation_cache.md
has the design; in short:

- The cache holds exactly what `ActivationStream` produces *before* shuffling: the ordinary-token
  activations of training contexts 0, 1, 2, ..., context by context, computed in the same LM
  batches. A stream over the cache feeds them through the same `shuffled_batches` buffer with the
  same seed, so it yields the same batches as the live stream.
- Directory `<root>/<model>-<hook>-<key>/`, key = sha256 of everything that determines the
  activations (`key.py`). Not in the key: the token budget (the cache is a prefix of one
  canonical stream; a longer budget extends it, `budget.py`), batch and buffer sizes, the SAE.
- Fixed-size shards of whole LM batches, `.npy` (float32, or bfloat16 stored as uint16), so they
  can also be memory-mapped; `manifest.json` (key fields, shards, per-context row counts, sha256
  and byte size of every shard, d_in, total tokens) is written last, atomically (`files.py`).
- An `fcntl.flock` on `<dir>/.lock`: builders hold it exclusively, readers share it while they
  check and open shards. Concurrent jobs build once; the others wait and reuse. A builder that
  dies releases the lock with its process; its temporary files are removed by the next builder
  (`builder.py`).
- Every shard is checked against the manifest (size and sha256) before use; a bad shard is rebuilt.
  `reader.py` reads rows of any contexts; `stream.py` turns them into training batches.
"""

from sae_sweeps.data.activation_cache.budget import AtLeastContexts, Requirement, StreamBudget
from sae_sweeps.data.activation_cache.builder import ActivationCache
from sae_sweeps.data.activation_cache.files import CacheError
from sae_sweeps.data.activation_cache.key import cache_key, cache_key_fields
from sae_sweeps.data.activation_cache.reader import CacheReader
from sae_sweeps.data.activation_cache.stream import CachedActivationStream

__all__ = [
    "ActivationCache", "AtLeastContexts", "CacheError", "CacheReader", "CachedActivationStream",
    "Requirement", "StreamBudget", "cache_key", "cache_key_fields",
]
