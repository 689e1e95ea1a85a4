"""After training: the feature browser and steering on a finished tiny run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch

from analysis import features, steer
from launch_helpers import REPO, run_launch
from sae_sweeps.loaded_run import load_run

CHROMIUM = shutil.which("chromium")
# Without the background-networking flags Chromium's own update and account requests fill the log.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
BROWSER_OWN_REQUEST = "not an origin"  # the initiator Chromium gives its own requests; a page's are "null" (file://)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, monkeypatch_module) -> Path:
    cwd = tmp_path_factory.mktemp("after_training")
    run_launch(["model=tiny", "sae_arch=topk", "train.tokens=8192", "train.batch_size=512", "logger=none"], cwd, cache_dir)
    (summary,) = cwd.glob("outputs/*/*/summary.json")
    monkeypatch_module.setenv("SAE_SWEEPS_CACHE", str(cache_dir))  # the tiny LM the run built
    return summary.parent


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def loaded(run_dir: Path):
    return load_run(run_dir)


def test_latents_across_frequencies_span_the_alive_range_and_skip_dead_latents():
    """Invariant: the densest and the rarest alive latent are both chosen, never a dead one."""
    frequency_F = torch.tensor([0.0, 0.5, 1e-4, 0.0, 0.02, 0.1, 1e-3, 0.3])
    chosen = features.latents_across_frequencies(frequency_F, 4)
    assert chosen[0] == 1 and chosen[-1] == 2 and len(chosen) == 4
    assert not {0, 3} & set(chosen)
    assert sorted(features.latents_across_frequencies(frequency_F, 50)) == [1, 2, 4, 5, 6, 7]


def test_the_pass_measures_the_firing_the_summary_reports(run_dir: Path, loaded):
    """Property: over the run's own held-out contexts, the firing frequencies sum to the held-out L0."""
    tokens_NT = features.held_out_or_training_contexts(loaded, loaded.config.data.eval_contexts, "held_out")
    measured = features.activation_pass(loaded, tokens_NT)
    assert float(measured.firing_frequency_F.sum()) == pytest.approx(loaded.summary["l0"], rel=1e-5)
    densest = int(measured.firing_frequency_F.argmax())
    report = features.latent_report(loaded, measured, densest, features.chosen_activations(loaded, measured, [densest])[..., 0])
    peaks = [max(e.activations) for e in report.top_examples]
    assert peaks == sorted(peaks, reverse=True) and peaks[0] == pytest.approx(report.max_activation)
    assert sum(report.histogram_counts) == round(float(measured.firing_frequency_F.max()) * int(measured.ordinary_NT.sum()))
    assert not {e.context for e in report.random_examples} & {e.context for e in report.top_examples}
    both_NTL = features.chosen_activations(loaded, measured, [3, densest])  # one encoding, columns in the order asked
    assert torch.equal(both_NTL[..., 1], features.chosen_activations(loaded, measured, [densest])[..., 0])


def test_the_logit_lens_ranks_tokens_by_the_decoder_direction_through_the_unembedding(loaded):
    promoted, suppressed = features.logit_lens(loaded, 3)
    logits_V = loaded.sae.W_dec[3].detach() @ loaded.model.bridge.W_U
    assert promoted[0][1] == pytest.approx(float(logits_V.max()), rel=1e-5)
    assert suppressed[0][1] == pytest.approx(float(logits_V.min()), rel=1e-5)
    assert [v for _, v in promoted] == sorted((v for _, v in promoted), reverse=True)


def test_the_cli_writes_an_index_and_a_page_per_latent_and_refuses_bad_latents(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "report"
    assert features.main([str(run_dir), "--latents", "5", "--contexts", "16", "--out", str(out)]) == 0
    pages = sorted(out.glob("latent_*.html"))
    assert len(pages) == 5 and (out / "index.html").exists()
    index = (out / "index.html").read_text()
    assert all(f"href='{page.name}'" in index for page in pages)
    assert features.main([str(run_dir), "--latents", "2,100000"]) == 2
    assert capsys.readouterr().out.strip().endswith("[100000] are not latent indices of this SAE (0..511)")
    assert features.main([str(tmp_path / "nowhere")]) == 2


def network_requests_of_the_page(net_log: Path) -> list[str]:
    """URLs the page itself asked for (Chromium's own background requests left out)."""
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"] for e in log["events"]
        if e["type"] == start_job and "url" in e["params"] and e["params"].get("initiator") != BROWSER_OWN_REQUEST
    ]


def render(page: Path, out: Path) -> tuple[str, set[str], float]:
    """Chromium headless: the page's DOM after loading, the URLs it requested, and the fraction of
    its screenshot that is not background."""
    net_log, screenshot = out / f"{page.stem}.netlog.json", out / f"{page.stem}.png"
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={out / 'profile'}", f"--log-net-log={net_log}"]
    subprocess.run([*common, "--window-size=1200,1600", f"--screenshot={screenshot}", page.as_uri()],
                   capture_output=True, timeout=300, check=True)
    pixels_HWC = matplotlib.image.imread(screenshot)[..., :3]
    requests = network_requests_of_the_page(net_log)
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300, check=True)
    return dom.stdout, {*requests, *network_requests_of_the_page(net_log)}, float((pixels_HWC < 0.95).any(axis=-1).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
def test_the_pages_render_offline_in_a_headless_browser_with_their_sections(run_dir: Path, tmp_path: Path):
    index = features.write_feature_report(run_dir, tmp_path / "report", latents=3, n_contexts=16)
    control = tmp_path / "control.html"  # the detector sees a page that does reach out
    control.write_text("<html><body><img src='http://127.0.0.1:9/x.png'></body></html>")
    assert render(control, tmp_path)[1] == {"http://127.0.0.1:9/x.png"}
    dom, requests, drawn = render(index, tmp_path)
    assert requests == set() and drawn > 0.01 and "id=\"density\"" in dom and "id=\"latents\"" in dom and "<svg" in dom
    latent_page = next(index.parent.glob("latent_*.html"))
    dom, requests, drawn = render(latent_page, tmp_path)
    assert requests == set() and drawn > 0.01
    for section in ("statistics", "top-contexts", "random-contexts", "logit-lens"):
        assert f"id=\"{section}\"" in dom, section


def test_steering_at_alpha_zero_is_the_plain_lm_and_a_large_alpha_changes_the_text(run_dir: Path, loaded):
    """Both generations share one seed: only the added direction can make them differ."""
    plain = steer.steer(str(run_dir), 7, alpha=0.0, new_tokens=12, run=loaded)
    assert plain.steered == plain.unsteered and plain.added_norm == 0.0
    strong = steer.steer(str(run_dir), 7, alpha=30.0, new_tokens=12, temperature=0.0, run=loaded)
    assert strong.steered != strong.unsteered
    assert strong.added_norm == pytest.approx(30.0 * steer.median_activation_norm(loaded), rel=1e-5)


def test_the_steering_cli_prints_both_generations_and_refuses_a_bad_latent(run_dir: Path, cache_dir: Path):
    def cli(*args: str) -> subprocess.CompletedProcess:
        env = os.environ | {"SAE_SWEEPS_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-m", "analysis.steer", str(run_dir), *args],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)

    done = cli("--latent", "3", "--alpha", "2", "--new-tokens", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [line.split(":")[0] for line in done.stdout.splitlines()[1:]] == ["prompt", "steered", "unsteered"]
    refused = cli("--latent", "512")
    assert refused.returncode == 2 and refused.stdout.strip() == "error: --latent 512: not a latent of this SAE (0..511)"
