"""What a run reports, declared once: the evaluator returns `HeldOutMetrics`, a finished run writes
a `RunSummary` as summary.json (and to wandb), and the analysis reads its columns, axes and console
headline from the same fields. A new metric is one field here (and the code that computes it).

Standard library only: `analysis` imports this without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

SUMMARY_VERSION = 6
"""Bumped whenever a field changes meaning, appears or goes away (1: before the contract was declared here;
2: declared here; 3: a `<name>_se` standard error beside each held-out estimate; 4: the `sparse_probing_*`
fields, None on data without labels; 5: transcoders: `kind`, `hook_input`, and `hook` names the written hook; 6: tokens and time per kind of
step, `local_tokens`, `local_seconds`, `e2e_tokens`, `e2e_seconds`; `train_seconds` without evaluations)."""
SE_SUFFIX = "_se"
"""`<name>_se` is the standard error of metric `<name>` (docs/method.md#standard-errors)."""
SUMMARY_FILENAME = "summary.json"
FAILURE_FILENAME = "failure.json"
COMPLETED = "completed"


def axis(
    label: str, higher_is_better: bool = False, headline: bool = False, se: bool = False, absent_when: str | None = None
) -> Any:
    """A field that can be a frontier axis (`label` with units); `headline` ones are printed at the end of a run;
    `se` ones are estimates over held-out contexts and carry a standard error `<name>_se`; `absent_when` says
    when a completed run has None there (an optional measurement), for the message of an analysis that lacks it."""
    metadata = {"axis_label": label, "higher_is_better": higher_is_better, "headline": headline, "se": se}
    return field(metadata=metadata | ({"absent_when": absent_when} if absent_when else {}))


def se_key(name: str) -> str:
    """The summary key holding the standard error of metric `name`."""
    return name + SE_SUFFIX


def headline(**metadata: Any) -> Any:
    """A field printed at the end of a run but never an axis."""
    return field(metadata={"headline": True, **metadata})


@dataclass(frozen=True)
class HeldOutMetrics:
    """Held-out metrics of one SAE from one pass of the evaluator (docs/method.md#metrics)."""

    l0: float = axis("L0 (active latents per token)", headline=True, se=True)
    """Mean number of active latents per ordinary held-out token."""
    fvu: float = axis("FVU (fraction of variance unexplained)", headline=True, se=True)
    """sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (variance about the mean, not about zero)."""
    explained_variance: float = axis("Explained variance (fraction)", higher_is_better=True, se=True)
    """1 - fvu."""
    ce_loss_clean: float = axis("CE loss of the clean LM (nats/token)", se=True)
    """Next-token cross-entropy of the unmodified LM, in nats."""
    ce_loss_sae: float = axis("CE loss with SAE spliced in (nats/token)", se=True)
    """Cross-entropy with the SAE's reconstruction spliced in at the hook."""
    ce_loss_zero_ablation: float = axis("CE loss with the hook zero-ablated (nats/token)", se=True)
    """Cross-entropy with the hook's activation set to zero."""
    ce_loss_increase: float = axis("CE loss increase (nats/token)", headline=True, se=True)
    """ce_loss_sae - ce_loss_clean."""
    ce_loss_recovered: float = axis("CE loss recovered (fraction)", higher_is_better=True, headline=True, se=True)
    """(ce_loss_zero_ablation - ce_loss_sae) / (ce_loss_zero_ablation - ce_loss_clean)."""
    kl: float = axis("KL(P_clean || P_sae) (nats/token)", headline=True, se=True)
    """Mean per-token KL(P_clean || P_sae), in nats."""
    dense_fraction: float = axis("Dense latents (fraction)")
    """Fraction of latents firing on more than 10% of held-out tokens (a count over a threshold: no standard error)."""
    eval_tokens: int = field()
    """Ordinary (non-special) held-out tokens the metrics average over."""
    feature_density_histogram: dict = field(repr=False, metadata={"scalar": False})
    """log10 firing-frequency histogram over held-out tokens; never-fired latents counted apart."""
    standard_errors: dict[str, float] = field(repr=False, metadata={"scalar": False})
    """Standard error over held-out contexts of each metric declared with `se=True`, by metric name."""

    def __post_init__(self) -> None:
        expected = {f.name for f in fields(self) if f.metadata.get("se")}
        if set(self.standard_errors) != expected:
            raise ValueError(f"standard_errors must name exactly {sorted(expected)}, got {sorted(self.standard_errors)}")

    def scalars(self) -> dict[str, float]:
        """The metrics as name -> number, each `<name>_se` right after its metric (the histogram left out)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("scalar", True)}
        values |= {se_key(name): se for name, se in self.standard_errors.items()}
        return {key: values[key] for key in _scalar_keys(HeldOutMetrics)}


@dataclass(frozen=True)
class TrainingRecord:
    """What training itself measured."""

    dead_fraction: float = axis("Dead latents (fraction)", headline=True)
    """Latents that did not fire within the last `dead_window_tokens` training tokens."""
    alive_latents: int = axis("Alive latents (count)")
    """d_sae x (1 - dead_fraction), rounded."""
    dead_window_tokens: int = field()
    """The window behind dead_fraction (at most the tokens trained)."""
    tokens_trained: int = headline()
    """Tokens the SAE was trained on, over every data-parallel rank."""
    train_seconds: float = headline()
    """Wall time of the training steps and the loading of their batches, summed over every (re)start of the job;
    held-out evaluations (during and after training) excluded."""
    local_tokens: int = field()
    """Of tokens_trained, those trained on activations alone (the local loss, local_then_e2e's first phase)."""
    local_seconds: float = field()
    """Wall time of those steps, loading their batches included (with e2e_seconds: train_seconds)."""
    e2e_tokens: int = field()
    """Of tokens_trained, those trained through the LM (e2e, e2e_ds, local_then_e2e's fine-tune)."""
    e2e_seconds: float = field()
    """Wall time of those steps, loading their batches included."""
    train_loss_start: float = field()
    """Mean training loss over the first tenth of the steps."""
    train_loss_end: float = field()
    """Mean training loss over the last tenth of the steps."""
    final_sparsity_coefficient: float = field()
    """The weight on the sparsity penalty at the end of training (where a controller left it; 0: hard budget)."""


PROBE_K: tuple[int, ...] = (1, 5, 20)
"""The probe sizes of k-sparse probing: one `sparse_probing_top<k>` and one `sparse_probing_raw_top<k>` field each."""
_NO_LABELS = (
    "the run's data has no labels (topic folders, or a `label` field in .jsonl records), probing was switched "
    "off (data.sparse_probing=false), or the run predates summary_version 4 (docs/sparse_probing.md)"
)


def _probe_axis(what: str) -> Any:
    return axis(f"Sparse probing accuracy, {what} (balanced, held-out)", higher_is_better=True, absent_when=_NO_LABELS)


@dataclass(frozen=True)
class SparseProbingScores:
    """Held-out k-sparse probing of the data's labels, averaged over one one-vs-rest task per label
    (docs/sparse_probing.md); every field None where the data has no labels or probing is off."""

    sparse_probing_top1: float | None = _probe_axis("1 SAE latent")
    """Balanced accuracy of a logistic probe on the 1 SAE latent whose training means differ most between the classes."""
    sparse_probing_top5: float | None = _probe_axis("5 SAE latents")
    """The same with the 5 such latents."""
    sparse_probing_top20: float | None = _probe_axis("20 SAE latents")
    """The same with the 20 such latents."""
    sparse_probing_raw_top1: float | None = _probe_axis("1 raw dimension")
    """Baseline: the same probe on the 1 dimension of the raw activation at the hook chosen the same way."""
    sparse_probing_raw_top5: float | None = _probe_axis("5 raw dimensions")
    """Baseline: on 5 raw dimensions."""
    sparse_probing_raw_top20: float | None = _probe_axis("20 raw dimensions")
    """Baseline: on 20 raw dimensions."""
    sparse_probing_raw_all: float | None = _probe_axis("all raw dimensions")
    """Baseline: on every dimension of the raw activation (d_in features)."""
    sparse_probing_tasks: int | None = field()
    """One-vs-rest tasks (labels) averaged over."""
    sparse_probing_train_documents: int | None = field()
    """Training documents the latents were chosen and the probes fitted on (first context of each)."""
    sparse_probing_held_out_documents: int | None = field()
    """Held-out documents the accuracies are measured on (first context of each)."""

    def __post_init__(self) -> None:
        declared = {f.name for f in fields(self) if "_top" in f.name}
        expected = {probe_key(k, raw) for k in PROBE_K for raw in (False, True)}
        if declared != expected:
            raise ValueError(f"the sparse probing fields {sorted(declared)} do not match PROBE_K={PROBE_K}")

    @classmethod
    def absent(cls) -> SparseProbingScores:
        """Every field None: the data has no labels, or probing is off."""
        return cls(**{f.name: None for f in fields(cls)})


def probe_key(k: int, raw: bool = False) -> str:
    """The summary key of the k-sparse probe on SAE latents, or on raw dimensions with `raw`."""
    return f"sparse_probing_{'raw_' if raw else ''}top{k}"


@dataclass(frozen=True)
class RunChoices:
    """What was trained: the config choices a table or a frontier groups by."""

    model: str
    """The `model` preset's name."""
    hook: str
    """The transformer_lens name of the activation the SAE writes when spliced in (its reconstruction replaces
    it; CE loss and FVU are measured there): an SAE's own hook, a transcoder's output hook."""
    hook_layer: int
    """The block that hook belongs to."""
    hook_input: str
    """The activation the SAE reads: `hook` for an SAE, a transcoder's input hook (e.g. blocks.6.mlp.hook_in)."""
    kind: str
    """`sae` (reads and reconstructs `hook`), `transcoder` (reads `hook_input`, predicts `hook`) or `skip_transcoder`
    (a transcoder plus a learned linear map from input to output)."""
    sae_arch: str
    """The `sae_arch` choice."""
    loss: str
    """The `loss` choice."""
    sparsity_knob: str
    """The setting that sets this run's L0: `coefficient`, `k` or `target_l0`."""
    sparsity_value: float
    """That setting's value."""
    sparsity_coefficient: float
    """`sparsity.coefficient` (unused by architectures without a penalty; with a target, where its controller started,
    before the loss's fidelity scale multiplied it: docs/method.md#target-l0-controller)."""
    target_l0: float | None
    """`sparsity.target_l0`, the L0 the run aimed at (None: a raw k or coefficient was given); the landed L0 is `l0`."""
    d_in: int
    """Activation width at the hook."""
    d_sae: int
    """Dictionary size."""
    seed: int
    """`train.seed`."""
    sweep_id: str | None
    """The sweep directory shared by a sweep's members (None for a single run)."""


@dataclass(frozen=True)
class RunSummary:
    """One finished run: summary.json, flat, every field below at the top level."""

    choices: RunChoices
    """What was trained."""
    held_out: HeldOutMetrics
    """The final held-out evaluation."""
    training: TrainingRecord
    """What training measured."""
    sparse_probing: SparseProbingScores
    """k-sparse probing of the data's labels (None throughout on data without labels)."""
    config_fingerprint: str
    """Hash of every config value that changes the result (sae_sweeps/run_directory.py)."""
    run_dir: str
    """Where the run's files are."""
    config: dict
    """The resolved config."""

    def to_json(self) -> dict[str, Any]:
        return {
            "summary_version": SUMMARY_VERSION,
            "status": COMPLETED,
            **self.held_out.scalars(),
            **asdict(self.training),
            **asdict(self.sparse_probing),
            **asdict(self.choices),
            "config_fingerprint": self.config_fingerprint,
            "run_dir": self.run_dir,
            "feature_density_histogram": self.held_out.feature_density_histogram,
            "config": self.config,
        }


def _scalar_keys(cls: type) -> list[str]:
    """The summary keys a dataclass's fields give: each scalar field, and `<name>_se` right after an `se` one."""
    keys = []
    for f in fields(cls):
        if f.metadata.get("scalar", True):
            keys.append(f.name)
        if f.metadata.get("se"):
            keys.append(se_key(f.name))
    return keys


CHOICE_KEYS: tuple[str, ...] = tuple(f.name for f in fields(RunChoices))
"""Summary keys that say what was trained."""
MEASURED = (HeldOutMetrics, TrainingRecord, SparseProbingScores)
"""The dataclasses whose fields are numbers a run measured."""
METRIC_KEYS: tuple[str, ...] = tuple(key for cls in MEASURED for key in _scalar_keys(cls))
"""Summary keys that hold numbers measured by the run, standard errors included."""
OPTIONAL_METRIC_KEYS: frozenset[str] = frozenset(f.name for f in fields(SparseProbingScores))
"""Metric keys a completed run may hold None in (a measurement its data did not allow)."""
SE_KEYS: dict[str, str] = {f.name: se_key(f.name) for f in fields(HeldOutMetrics) if f.metadata.get("se")}
"""Metric name -> the summary key of its standard error, for every metric that has one."""
HEADLINE_KEYS: tuple[str, ...] = tuple(f.name for cls in MEASURED for f in fields(cls) if f.metadata.get("headline"))
"""Printed at the end of a run and of a sweep."""
INTEGER_KEYS: frozenset[str] = frozenset(
    f.name for cls in (RunChoices, *MEASURED) for f in fields(cls) if str(f.type).startswith("int")
)
TEXT_KEYS: frozenset[str] = frozenset(f.name for f in fields(RunChoices) if str(f.type).startswith("str"))


class Metric(NamedTuple):
    """A summary metric that can be an axis of a frontier."""

    name: str
    """Key in summary.json and column in the runs table."""
    label: str
    """Axis label, with units."""
    higher_is_better: bool
    """Direction of improvement; the frontier keeps the best points in this direction."""
    se: str | None
    """Key and column of its standard error (None for a metric without one)."""
    absent_when: str | None = None
    """When a completed run holds None for it (None: every completed run has it)."""


AXIS_METRICS: dict[str, Metric] = {
    f.name: Metric(
        f.name, f.metadata["axis_label"], f.metadata["higher_is_better"], SE_KEYS.get(f.name), f.metadata.get("absent_when")
    )
    for cls in MEASURED
    for f in fields(cls)
    if "axis_label" in f.metadata
}
"""Every metric a frontier can put on an axis, by name."""
