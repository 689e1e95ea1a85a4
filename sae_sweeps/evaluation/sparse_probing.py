"""k-sparse probing (Gao et al. 2024; SAEBench, Karvonen et al. 2025): how well the few SAE latents that
differ most between a label's documents and the others' predict that label on held-out documents, next
to the same probe on as many raw dimensions of the activation, and on all of them (docs/sparse_probing.md).

Every document is its first context, mean-pooled over its ordinary tokens. The LM pass over the probe
documents does not depend on the SAE: it is computed once and shared on disk (shared_tensors.py); each
SAE then costs one encoding of those stored activations and a few small logistic regressions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor

from sae_sweeps.data.corpus import Corpus
from sae_sweeps.evaluation.shared_tensors import cached_tensors, lm_pass_key
from sae_sweeps.models import HookPoint, LanguageModel
from sae_sweeps.saes import SparseAutoencoder
from sae_sweeps.summary import PROBE_K, SparseProbingScores, probe_key

FORMAT_VERSION = 1
ACTIVATIONS = ("acts_NTD",)


class ProbingUnavailable(Exception):
    """The data cannot be probed; the message is the one-line note saying why."""


@dataclass(frozen=True)
class ProbeDocuments:
    """The labelled documents the probes are chosen, fitted and scored on."""

    tokens_NT: Tensor
    """Each document's first context (BOS first; BOS-padded after a short document's end)."""
    labels: tuple[str, ...]
    """Each document's label."""
    held_out_N: Tensor
    """True for a held-out document: never used to choose latents or to fit a probe."""

    def tasks(self) -> tuple[str, ...]:
        """The labels that make a one-vs-rest task: each needs positive and negative documents among both the
        training and the held-out documents, so it occurs on both sides and neither side has one label only."""
        held_out = self.held_out_N.tolist()
        train = {label for label, out in zip(self.labels, held_out) if not out}
        test = {label for label, out in zip(self.labels, held_out) if out}
        return tuple(sorted(train & test)) if len(train) > 1 and len(test) > 1 else ()

    def positive_N(self, task: str) -> Tensor:
        """True for the documents labelled `task`."""
        return torch.tensor([label == task for label in self.labels])


def probe_documents(data: Corpus, max_train: int, max_held_out: int) -> ProbeDocuments:
    """The first `max_train` training and `max_held_out` held-out labelled documents of the corpus, in its
    document order (a seeded shuffle, so a random sample); ProbingUnavailable when it cannot be probed."""
    if not data.has_labels:
        raise ProbingUnavailable(
            "sparse probing skipped: the data has no labels (text files in <folder>/<label>/*.txt or .jsonl records "
            "with a `label` field give them)"
        )
    if data.split_by_context:
        raise ProbingUnavailable(
            "sparse probing skipped: the corpus has fewer documents than data.holdout_every, so no held-out documents"
        )
    train = list(islice(data.labelled_documents(held_out=False), max_train))
    held_out = list(islice(data.labelled_documents(held_out=True), max_held_out))
    documents = train + held_out
    probe = ProbeDocuments(
        tokens_NT=data.first_contexts(text for text, _ in documents),
        labels=tuple(label for _, label in documents),
        held_out_N=torch.arange(len(documents)) >= len(train),
    )
    if not probe.tasks():
        raise ProbingUnavailable(
            f"sparse probing skipped: no label makes a task on the {len(train)} training and {len(held_out)} held-out "
            "labelled documents (each side needs that label and another one)"
        )
    return probe


@torch.no_grad()
def document_activations(model: LanguageModel, hook: HookPoint, tokens_NT: Tensor, batch_contexts: int) -> Tensor:
    """[N, T, D] on the CPU: the activation at `hook` at every position of every context."""
    return torch.cat([model.activations_at(tokens_BT.to(model.device), hook).cpu() for tokens_BT in tokens_NT.split(batch_contexts)])


def mean_per_document(values_RX: Tensor, document_R: Tensor, n_documents: int) -> Tensor:
    """[n_documents, X]: the mean of the rows of each document (rows of document n: `document_R == n`)."""
    sums_NX = torch.zeros(n_documents, values_RX.shape[1], dtype=values_RX.dtype, device=values_RX.device)
    sums_NX.index_add_(0, document_R, values_RX)
    counts_N = torch.bincount(document_R, minlength=n_documents).clamp(min=1)
    return sums_NX / counts_N.unsqueeze(1).to(values_RX.dtype)


@torch.no_grad()
def pooled_features(
    acts_NTD: Tensor, ordinary_NT: Tensor, encode: Callable[[Tensor], Tensor], batch_contexts: int, device: torch.device
) -> Tensor:
    """[N, X] on the CPU, float64: `encode` of each ordinary token's activation, mean-pooled per document."""
    pooled = []
    for start in range(0, len(acts_NTD), batch_contexts):
        batch = slice(start, start + batch_contexts)
        ordinary_BT = ordinary_NT[batch].to(device)
        acts_RD = acts_NTD[batch].to(device)[ordinary_BT]
        document_R = ordinary_BT.nonzero()[:, 0]
        pooled.append(mean_per_document(encode(acts_RD).float(), document_R, len(ordinary_BT)).double().cpu())
    return torch.cat(pooled)


def top_k_by_mean_difference(features_NF: Tensor, positive_N: Tensor, k: int) -> Tensor:
    """The k features (indices, largest first) whose means differ most, in absolute value, between the
    positive and the negative documents."""
    difference_F = features_NF[positive_N].mean(dim=0) - features_NF[~positive_N].mean(dim=0)
    return difference_F.abs().topk(min(k, features_NF.shape[1])).indices


@dataclass(frozen=True)
class LogisticProbe:
    """P(positive | x) = sigmoid(((x - mean_K) / scale_K) . weight_K + bias), fitted on training features."""

    mean_K: Tensor
    """The training features' means."""
    scale_K: Tensor
    """The training features' standard deviations (1 where a feature is constant)."""
    weight_K: Tensor
    """Weights on the standardised features."""
    bias: float
    """The intercept (not regularised)."""

    def logits(self, features_NK: Tensor) -> Tensor:
        return ((features_NK.double() - self.mean_K) / self.scale_K) @ self.weight_K + self.bias

    def predict(self, features_NK: Tensor) -> Tensor:
        """True where the probe says positive (P > 1/2)."""
        return self.logits(features_NK) > 0


def fit_logistic_probe(features_NK: Tensor, positive_N: Tensor, l2: float | None = None, max_iter: int = 500) -> LogisticProbe:
    """A class-balanced logistic regression on standardised features, by L-BFGS in float64:

        minimise  sum_n w_n log(1 + exp(-s_n (z_n . weight + bias))) + l2 / 2 ||weight||^2

    with s_n = +-1 the class, z_n the standardised features, and w_n = 1 / (2 x the size of n's class), so
    that each class weighs half whatever the imbalance. `l2` defaults to 1 / N: sklearn's
    LogisticRegression(C=1, class_weight="balanced") on the same standardised features."""
    x_NK = features_NK.double()
    mean_K = x_NK.mean(dim=0)
    scale_K = x_NK.std(dim=0, correction=0)
    scale_K = torch.where(scale_K > 0, scale_K, 1.0)  # a constant feature (a dead latent) stays 0 once centred
    z_NK = (x_NK - mean_K) / scale_K
    sign_N = positive_N.double() * 2 - 1
    n_positive = int(positive_N.sum())
    if n_positive in (0, len(positive_N)):
        raise ValueError("a probe needs positive and negative training examples")
    weight_N = torch.where(positive_N, 0.5 / n_positive, 0.5 / (len(positive_N) - n_positive)).double()
    l2 = 1 / len(positive_N) if l2 is None else l2
    weight_K = torch.zeros(z_NK.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight_K, bias], lr=1, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )

    def loss() -> Tensor:
        optimizer.zero_grad()
        margin_N = sign_N * (z_NK @ weight_K + bias)
        value = (weight_N * torch.nn.functional.softplus(-margin_N)).sum() + 0.5 * l2 * weight_K.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():  # callers may be under no_grad (an evaluation)
        optimizer.step(loss)
    return LogisticProbe(mean_K, scale_K, weight_K.detach(), float(bias.detach()))


def balanced_accuracy(predicted_N: Tensor, positive_N: Tensor) -> float:
    """The mean of the true-positive and the true-negative rate: 1/2 for any constant guess, whatever the
    class balance (a one-vs-rest task on five labels is 1:4)."""
    true_positive_rate = int((predicted_N & positive_N).sum()) / int(positive_N.sum())
    true_negative_rate = int((~predicted_N & ~positive_N).sum()) / int((~positive_N).sum())
    return (true_positive_rate + true_negative_rate) / 2


def probe_accuracy(features_NF: Tensor, positive_N: Tensor, held_out_N: Tensor) -> float:
    """Held-out balanced accuracy of a probe fitted on the training documents' features."""
    probe = fit_logistic_probe(features_NF[~held_out_N], positive_N[~held_out_N])
    return balanced_accuracy(probe.predict(features_NF[held_out_N]), positive_N[held_out_N])


def k_sparse_accuracies(features_NF: Tensor, positive_N: Tensor, held_out_N: Tensor) -> tuple[Tensor, Tensor]:
    """([len(PROBE_K)] held-out balanced accuracies, [max(PROBE_K)] feature ranking): the probe on the top-k
    features by training mean difference for each k of PROBE_K; the top-k are the ranking's first k."""
    ranking_M = top_k_by_mean_difference(features_NF[~held_out_N], positive_N[~held_out_N], max(PROBE_K))
    accuracies_K = torch.tensor(
        [probe_accuracy(features_NF[:, ranking_M[:k]], positive_N, held_out_N) for k in PROBE_K], dtype=torch.float64
    )
    return accuracies_K, ranking_M


@dataclass(frozen=True)
class SparseProbingResult:
    """Held-out balanced accuracy of every probe, per one-vs-rest task (one per label)."""

    tasks: tuple[str, ...]
    """The labels, one task each: that label's documents against all the others."""
    sae_TK: Tensor
    """[tasks, len(PROBE_K)]: the probe on the k SAE latents whose training means differ most between the classes."""
    raw_TK: Tensor
    """[tasks, len(PROBE_K)]: the same probe on k dimensions of the raw activation at the hook, chosen the same way."""
    raw_all_T: Tensor
    """[tasks]: the probe on every dimension of the raw activation."""
    latent_ranking_TM: Tensor
    """[tasks, max(PROBE_K)]: each task's latents by training mean difference, largest first (the top-k probe's are the first k)."""
    train_documents: int
    """Training documents that chose the latents and fitted the probes."""
    held_out_documents: int
    """Held-out documents the accuracies are measured on."""
    seconds: float
    """Wall time of the scoring, the LM pass over the documents included when it was not cached."""

    def scores(self) -> SparseProbingScores:
        """The averages over tasks, as the summary records them."""
        sae_K, raw_K = self.sae_TK.mean(dim=0).tolist(), self.raw_TK.mean(dim=0).tolist()
        return SparseProbingScores(
            **{probe_key(k): accuracy for k, accuracy in zip(PROBE_K, sae_K)},
            **{probe_key(k, raw=True): accuracy for k, accuracy in zip(PROBE_K, raw_K)},
            sparse_probing_raw_all=float(self.raw_all_T.mean()),
            sparse_probing_tasks=len(self.tasks),
            sparse_probing_train_documents=self.train_documents,
            sparse_probing_held_out_documents=self.held_out_documents,
        )

    def table(self) -> str:
        """k, then the task-averaged accuracy of the SAE-latent, raw-dimension and all-dimension probes."""
        sae_K, raw_K, raw_all = self.sae_TK.mean(dim=0), self.raw_TK.mean(dim=0), float(self.raw_all_T.mean())
        lines = [f"{'k':>4}  {'SAE latents':>11}  {'raw dims':>8}  {'all dims':>8}"]
        lines += [f"{k:>4}  {sae:>11.3f}  {raw:>8.3f}  {raw_all:>8.3f}" for k, sae, raw in zip(PROBE_K, sae_K.tolist(), raw_K.tolist())]
        return "\n".join(lines)

    def summary_line(self) -> str:
        """One line for the run's log."""
        scores = self.scores()
        sae = " ".join(f"top{k} {getattr(scores, probe_key(k)):.3f}" for k in PROBE_K)
        raw = " ".join(f"top{k} {getattr(scores, probe_key(k, raw=True)):.3f}" for k in PROBE_K)
        return (
            f"sparse probing, balanced accuracy over {len(self.tasks)} labels ({self.train_documents} training, "
            f"{self.held_out_documents} held-out documents, {self.seconds:.1f} s): SAE {sae} | raw {raw} | "
            f"all {scores.sparse_probing_raw_all:.3f}"
        )


class SparseProber:
    """Scores SAEs at one hook point by k-sparse probing of one set of labelled documents. The LM pass over
    them (and the raw-dimension baselines, which do not depend on the SAE either) runs on first use only."""

    def __init__(
        self, model: LanguageModel, documents: ProbeDocuments, activations: Callable[[], Tensor], batch_contexts: int
    ) -> None:
        self.model, self.documents, self.batch_contexts = model, documents, batch_contexts
        self._activations = activations
        self._acts_NTD: Tensor | None = None
        self._baselines: tuple[Tensor, Tensor] | None = None

    @torch.no_grad()
    def score(self, sae: SparseAutoencoder, input_scale: float = 1.0) -> SparseProbingResult:
        """Probe `sae`'s latents (`input_scale`: what the SAE multiplies raw activations by, 1 for a saved SAE)."""
        start = time.perf_counter()
        documents, tasks = self.documents, self.documents.tasks()
        if self._acts_NTD is None:
            self._acts_NTD = self._activations()
        acts_NTD = self._acts_NTD
        ordinary_NT = ~self.model.special_token_mask(documents.tokens_NT)
        was_training = sae.training
        sae.eval()
        latents_NF = pooled_features(
            acts_NTD, ordinary_NT, lambda acts_RD: sae.encode(acts_RD * input_scale), self.batch_contexts, self.model.device
        )
        sae.train(was_training)
        if self._baselines is None:
            raw_ND = pooled_features(acts_NTD, ordinary_NT, lambda acts_RD: acts_RD, self.batch_contexts, self.model.device)
            self._baselines = self._raw_baselines(raw_ND, tasks)
        raw_TK, raw_all_T = self._baselines
        sae_TK, ranking_TM = [], []
        for task in tasks:
            accuracies_K, ranking_M = k_sparse_accuracies(latents_NF, documents.positive_N(task), documents.held_out_N)
            sae_TK.append(accuracies_K)
            ranking_TM.append(ranking_M)
        n_held_out = int(documents.held_out_N.sum())
        return SparseProbingResult(
            tasks=tasks, sae_TK=torch.stack(sae_TK), raw_TK=raw_TK, raw_all_T=raw_all_T,
            latent_ranking_TM=torch.stack(ranking_TM), train_documents=len(documents.labels) - n_held_out,
            held_out_documents=n_held_out, seconds=time.perf_counter() - start,
        )

    def _raw_baselines(self, raw_ND: Tensor, tasks: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """[tasks, len(PROBE_K)] accuracies on k raw dimensions, and [tasks] on all of them."""
        held_out_N = self.documents.held_out_N
        raw_TK, raw_all_T = [], []
        for task in tasks:
            positive_N = self.documents.positive_N(task)
            raw_TK.append(k_sparse_accuracies(raw_ND, positive_N, held_out_N)[0])
            raw_all_T.append(probe_accuracy(raw_ND, positive_N, held_out_N))
        return torch.stack(raw_TK), torch.tensor(raw_all_T, dtype=torch.float64)


def sparse_prober(
    data: Corpus, hook: HookPoint, max_train: int, max_held_out: int, cache_root: Path | None, batch_contexts: int
) -> SparseProber:
    """A prober on the corpus's labelled documents (probe_documents), their activations computed with
    `batch_contexts` contexts per LM pass and, with a `cache_root`, shared on disk by every run on the same
    model, hook, data and documents; ProbingUnavailable when the corpus cannot be probed."""
    documents = probe_documents(data, max_train, max_held_out)
    model, tokens_NT = data.model, documents.tokens_NT

    def compute() -> tuple[Tensor]:
        return (document_activations(model, hook, tokens_NT, batch_contexts),)

    def activations() -> Tensor:
        if cache_root is None:
            return compute()[0]
        key = lm_pass_key("sparse_probing_activations", FORMAT_VERSION, data.cache_fields(hook), tokens_NT, batch_contexts)
        return cached_tensors(cache_root, key, ACTIVATIONS, compute, "the sparse-probing documents' activations")[0]

    return SparseProber(model, documents, activations, batch_contexts)
