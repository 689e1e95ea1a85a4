"""k-sparse probing (sae_sweeps/evaluation/sparse_probing.py): the latent selection, the logistic probe and the
accuracy on synthetic data whose answer is known; labels from topic folders and json fields; the skip with a
note on unlabelled data; the summary fields of a tiny run and the CLI on its directory."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest
import torch

from sae_sweeps.data import text
from sae_sweeps.data.corpus import Corpus
from sae_sweeps.evaluation.sparse_probing import (
    ProbeDocuments, ProbingUnavailable, balanced_accuracy, fit_logistic_probe, pooled_features, probe_accuracy,
    probe_documents, top_k_by_mean_difference,
)
from sae_sweeps.summary import PROBE_K, SparseProbingScores, probe_key

from launch_helpers import assert_complete, compose_config

TOPIC_WORDS = {
    "markets": "shares bank profit trade market price investor economy growth firm",
    "football": "goal match striker league cup coach season penalty stadium team",
    "weather": "rain storm cloud wind snow forecast flood heat cold sunny",
}


def labelled_folder(root: Path, documents_per_topic: int = 40, words: int = 150) -> Path:
    """`root/<topic>/<n>.txt`: each document draws most of its words from its topic's list."""
    rng = random.Random(0)
    common = "the of and to in a is that for on with as was".split()
    for topic, vocabulary in TOPIC_WORDS.items():
        (root / topic).mkdir(parents=True)
        for n in range(documents_per_topic):
            body = [rng.choice(vocabulary.split() if rng.random() < 0.6 else common) for _ in range(words)]
            (root / topic / f"{n}.txt").write_text(" ".join(body) + ".\n")
    return root


def one_informative_feature(n: int = 600, n_features: int = 50, informative: int = 7, seed: int = 0):
    """Features of which only `informative` carries the (1:4 imbalanced) label, and a split into training and held-out."""
    generator = torch.Generator().manual_seed(seed)
    positive_N = torch.rand(n, generator=generator) < 0.2
    features_NF = torch.randn(n, n_features, generator=generator, dtype=torch.float64)
    features_NF[:, informative] += 4 * positive_N
    held_out_N = torch.arange(n) % 5 == 0
    return features_NF, positive_N, held_out_N


# -- the parts, on data where the answer is known -------------------------------------------------------------
def test_the_label_carrying_feature_is_chosen_first_and_alone_probes_near_perfectly_while_a_noise_feature_is_chance():
    features_NF, positive_N, held_out_N = one_informative_feature()
    train = ~held_out_N
    ranking = top_k_by_mean_difference(features_NF[train], positive_N[train], k=5)
    assert ranking[0] == 7 and len(ranking) == 5
    assert probe_accuracy(features_NF[:, [7]], positive_N, held_out_N) > 0.95
    assert probe_accuracy(features_NF[:, [3]], positive_N, held_out_N) == pytest.approx(0.5, abs=0.12)


def test_the_selection_ranks_by_the_absolute_difference_of_class_means():
    positive_N = torch.tensor([True, True, False, False])
    features_NF = torch.tensor([[1.0, -5.0, 2.0], [1.0, -5.0, 2.0], [0.0, 0.0, 2.0], [0.0, 0.0, 2.0]])
    assert top_k_by_mean_difference(features_NF, positive_N, k=3).tolist() == [1, 0, 2]
    assert top_k_by_mean_difference(features_NF, positive_N, k=10).tolist() == [1, 0, 2]  # k past the width: all


def test_the_logistic_probe_separates_separable_classes_and_recovers_known_probabilities_otherwise():
    # Separable: one feature, every positive above every negative (4 positives to 16 negatives).
    x_N1 = torch.cat([torch.linspace(2, 3, 4), torch.linspace(-3, 0, 16)]).unsqueeze(1)
    positive_N = torch.arange(20) < 4
    probe = fit_logistic_probe(x_N1, positive_N)
    assert torch.equal(probe.predict(x_N1), positive_N)
    assert 0 < -probe.bias / probe.weight_K[0] * probe.scale_K[0] + probe.mean_K[0] < 2  # the boundary lies in the gap
    # Nearly unregularised, the weight grows far beyond the regularised one's: the margin widens without bound.
    assert fit_logistic_probe(x_N1, positive_N, l2=1e-8).weight_K[0] > 5 * probe.weight_K[0]

    # Inseparable, unregularised: a binary feature with P(positive | x=0) = 0.3 and P(positive | x=1) = 0.7, the
    # classes equally large, so the class weights are equal and the fit is the maximum-likelihood one.
    x_N1 = torch.tensor([0.0] * 100 + [1.0] * 100).unsqueeze(1)
    positive_N = torch.tensor([True] * 30 + [False] * 70 + [True] * 70 + [False] * 30)
    probe = fit_logistic_probe(x_N1, positive_N, l2=0.0)
    probabilities = torch.sigmoid(probe.logits(torch.tensor([[0.0], [1.0]])))
    assert probabilities.tolist() == pytest.approx([0.3, 0.7], abs=1e-6)


def test_the_class_weights_put_the_boundary_where_balanced_accuracy_wants_it():
    # One uninformative feature, 1:4 imbalance: an unweighted fit would call everything negative; the balanced
    # one is indifferent (P = 1/2 at the mean), and the constant guess scores 1/2 whatever the imbalance.
    x_N1 = torch.zeros(50, 1)
    positive_N = torch.arange(50) < 10
    probe = fit_logistic_probe(x_N1, positive_N)
    assert float(probe.logits(x_N1[:1])) == pytest.approx(0.0, abs=1e-9)
    assert balanced_accuracy(torch.zeros(50, dtype=torch.bool), positive_N) == 0.5
    assert balanced_accuracy(positive_N, positive_N) == 1.0


def test_pooling_averages_the_ordinary_tokens_of_each_document_only():
    acts_NTD = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    ordinary_NT = torch.tensor([[False, True, True, False], [False, True, True, True]])
    pooled_ND = pooled_features(acts_NTD, ordinary_NT, lambda acts: acts * 2, batch_contexts=1, device=torch.device("cpu"))
    expected = torch.stack([acts_NTD[n][ordinary_NT[n]].mean(dim=0) * 2 for n in range(2)]).double()
    assert torch.allclose(pooled_ND, expected)


def test_tasks_need_both_classes_on_both_sides_of_the_split():
    def documents(labels: str, held_out: str) -> ProbeDocuments:
        return ProbeDocuments(torch.zeros(len(labels), 2), tuple(labels), torch.tensor([h == "h" for h in held_out]))

    assert documents("abcab", "ttthh").tasks() == ("a", "b")  # c is never held out
    assert documents("aabb", "thth").tasks() == ("a", "b")
    assert documents("aaba", "ttth").tasks() == ()  # the held-out side has one label only


def test_the_summary_declares_one_sae_and_one_raw_field_per_k():
    assert [probe_key(k) for k in PROBE_K] == ["sparse_probing_top1", "sparse_probing_top5", "sparse_probing_top20"]
    assert all(value is None for value in vars(SparseProbingScores.absent()).values())


# -- labels from the data --------------------------------------------------------------------------------------
def test_topic_folders_and_json_label_fields_give_labels_and_a_flat_folder_none(tmp_path: Path):
    folder = labelled_folder(tmp_path / "topics", documents_per_topic=2, words=5)
    dataset = text.load_local_text(str(folder))
    assert text.has_labels(dataset) and sorted(set(dataset["label"])) == sorted(TOPIC_WORDS)
    assert dataset["label"] == [Path(f).parent.name for f in text.local_text_files(str(folder))]
    assert text.has_labels(text.load_local_text(str(folder / "*" / "*.txt")))  # a glob over the same layout
    assert not text.has_labels(text.load_local_text(str(folder / "markets")))  # one folder's files: no classes

    records = tmp_path / "records.jsonl"
    records.write_text("\n".join(json.dumps({"text": f"document {i}", "label": i % 2, "id": i}) for i in range(4)))
    dataset = text.load_local_text(str(records))
    assert dataset.column_names == ["text", "label"] and dataset["label"] == [0, 1, 0, 1]


def test_labelled_documents_follow_the_split_the_run_trains_and_evaluates_on(tiny_model, tmp_path: Path):
    folder = labelled_folder(tmp_path / "topics", documents_per_topic=20, words=5)
    cfg = compose_config(["model=tiny", f"data.path={folder}", "data.holdout_every=4"])
    corpus = Corpus(cfg.data, tiny_model)
    for held_out in (False, True):
        pairs = list(corpus.labelled_documents(held_out))
        assert [body for body, _ in pairs] == list(text.iter_documents(corpus.dataset, 0, held_out, 4))
        assert all(body.split()[0] in TOPIC_WORDS[label].split() + "the of and to in a is that for on with as was".split()
                   for body, label in pairs)
    documents = probe_documents(corpus, max_train=10, max_held_out=100)
    assert int((~documents.held_out_N).sum()) == 10 and int(documents.held_out_N.sum()) == 15
    assert documents.tokens_NT.shape == (25, cfg.data.context_size)
    assert (documents.tokens_NT[:, 0] == tiny_model.bos_token_id).all()


def test_unlabelled_data_skips_probing_with_a_one_line_note(tiny_model, tmp_path: Path, caplog):
    from sae_sweeps.run import build_sparse_prober

    for n in range(30):
        (tmp_path / f"{n}.txt").write_text(f"plain document number {n} without any label\n")
    cfg = compose_config(["model=tiny", f"data.path={tmp_path}"])
    corpus = Corpus(cfg.data, tiny_model)
    with pytest.raises(ProbingUnavailable, match="the data has no labels"):
        probe_documents(corpus, 100, 100)
    with caplog.at_level(logging.INFO, logger="sae_sweeps.run"):
        assert build_sparse_prober(cfg, None, corpus) is None
    (note,) = [record.getMessage() for record in caplog.records if "sparse probing" in record.getMessage()]
    assert note.startswith("sparse probing skipped: the data has no labels") and "\n" not in note
    assert note.endswith("its summary fields are None")


# -- end to end ------------------------------------------------------------------------------------------------
def test_a_tiny_run_on_topic_folders_records_the_probing_fields_the_cli_prints_and_the_analysis_plots(
    launch, tmp_path: Path, cache_dir: Path, monkeypatch, capsys
):
    from analysis.cli import main as analysis_main
    from analysis.sparse_probing import main as probing_main

    folder = labelled_folder(tmp_path / "topics")
    launch(["model=tiny", f"data.path={folder}", "data.holdout_every=4", "train.tokens=8192", "train.batch_size=512",
            "logger=none"])
    (summary_path,) = tmp_path.glob("outputs/*/*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert_complete(summary)
    assert (summary["sparse_probing_tasks"], summary["sparse_probing_held_out_documents"]) == (3, 30)
    assert summary["sparse_probing_train_documents"] == 90
    assert all(0 <= summary[probe_key(k, raw)] <= 1 for k in PROBE_K for raw in (False, True))
    assert summary["sparse_probing_raw_all"] > 0.8  # topic words move the pooled activation of even a random LM
    assert "sparse probing, balanced accuracy over 3 labels" in (summary_path.parent / "launch.log").read_text()

    monkeypatch.setenv("SAE_SWEEPS_CACHE", str(cache_dir))  # the tiny LM and the probe activations the run used
    assert probing_main([str(summary_path.parent)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("(football, markets, weather); 90 training, 30 held-out documents")
    rows = [line.split() for line in printed[2:]]
    assert [int(row[0]) for row in rows] == list(PROBE_K)
    for row, k in zip(rows, PROBE_K):  # the saved SAE (raw units) probes as the trained one did (scaled units)
        assert float(row[1]) == pytest.approx(summary[probe_key(k)], abs=0.06)
        assert float(row[2]) == pytest.approx(summary[probe_key(k, raw=True)], abs=1e-3)
        assert float(row[3]) == pytest.approx(summary["sparse_probing_raw_all"], abs=1e-3)

    assert analysis_main([str(tmp_path / "outputs"), "--y", "sparse_probing_top5", "--out", str(tmp_path / "analysis")]) == 0
    frontier = (tmp_path / "analysis" / "frontier.csv").read_text()
    assert "sparse_probing_top5" in frontier.splitlines()[0]


def test_a_tiny_run_on_unlabelled_text_has_none_in_the_probing_fields_and_the_analysis_says_why(
    launch, tmp_path: Path, capsys
):
    from analysis.cli import main as analysis_main

    folder = tmp_path / "plain"
    folder.mkdir()
    words = " ".join(TOPIC_WORDS.values()).split()
    for n in range(40):
        (folder / f"{n}.txt").write_text(" ".join(random.Random(n).choice(words) for _ in range(150)) + "\n")
    launch(["model=tiny", f"data.path={folder}", "train.tokens=4096", "train.batch_size=512", "logger=none"])
    (summary_path,) = tmp_path.glob("outputs/*/*/summary.json")
    assert_complete(json.loads(summary_path.read_text()), optional_present=False)
    assert "sparse probing skipped: the data has no labels" in (summary_path.parent / "launch.log").read_text()

    assert analysis_main([str(tmp_path / "outputs"), "--y", "sparse_probing_top5", "--out", str(tmp_path / "analysis")]) == 2
    error = capsys.readouterr().err
    assert "none of the 1 completed runs has a finite sparse_probing_top5" in error
    assert "a run lacks sparse_probing_top5 when the run's data has no labels" in error
