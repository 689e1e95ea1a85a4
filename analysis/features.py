"""Feature browser: `python -m analysis.features RUN_DIR` writes a static HTML report of what a
trained SAE's latents respond to, from one pass of the LM over held-out (or training) text.

For each chosen latent: how often it fires, the histogram of its activations, its top-activating
contexts and a few random activating ones (so the top is not all one sees), each token shaded by
the activation, and the logit lens (the tokens its decoder direction promotes and suppresses
through the unembedding). An index page lists the chosen latents by firing frequency above the
density histogram of all latents. The pages need no network: styles are inlined, figures are
inline SVG, there is no script.
"""

from __future__ import annotations

import argparse
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from sae_sweeps.loaded_run import LoadedRun, finished_run_summary, load_run

DEFAULT_LATENTS = 24
DEFAULT_CONTEXTS = 256
TOP_CONTEXTS = 10
RANDOM_CONTEXTS = 5
LOGIT_LENS_TOKENS = 10
WINDOW_BEFORE, WINDOW_AFTER = 24, 8  # tokens shown around an example's strongest activation
HISTOGRAM_BINS = 30
LM_BATCH_CONTEXTS = 8
ENCODE_BATCH_ROWS = 4096  # rows per SAE encoding when re-encoding: bounds the [rows, d_sae] intermediate


class FeatureReportError(ValueError):
    """A bad argument to the feature browser, named in one line."""


@dataclass
class ActivationPass:
    """What one pass over the text measured: every latent's firing, and the text itself."""

    tokens_NT: Tensor
    """The contexts, token ids."""
    ordinary_NT: Tensor
    """True at ordinary tokens (special tokens are never encoded, as in training and evaluation)."""
    acts_NTD: Tensor
    """The LM's activations at the hook (kept so chosen latents can be re-encoded without the LM)."""
    firing_frequency_F: Tensor
    """Fraction of ordinary tokens on which each latent is active."""
    max_activation_NF: Tensor
    """Each latent's largest activation in each context (0 where it never fires there)."""


@dataclass
class Example:
    """One context window shown for a latent."""

    context: int
    """Which context of the pass."""
    tokens: list[str]
    """The window's tokens as text."""
    activations: list[float]
    """The latent's activation at each of them (0 at special tokens)."""


@dataclass
class LatentReport:
    """Everything the page of one latent shows."""

    latent: int
    """The latent's index in the dictionary."""
    firing_frequency: float
    """Fraction of ordinary tokens on which it is active."""
    max_activation: float
    """Its largest activation in the pass."""
    histogram_counts: list[int]
    """Histogram of its nonzero activations..."""
    histogram_edges: list[float]
    """... over these bin edges."""
    top_examples: list[Example]
    """The contexts where it is strongest, strongest first."""
    random_examples: list[Example]
    """Randomly chosen other contexts where it fires."""
    promoted_tokens: list[tuple[str, float]]
    """Tokens whose logits its decoder direction raises most, with W_dec[i] . W_U[:, t]."""
    suppressed_tokens: list[tuple[str, float]]
    """Tokens whose logits it lowers most."""


def held_out_or_training_contexts(run: LoadedRun, n_contexts: int, split: str) -> Tensor:
    """The first `n_contexts` held-out (`split="held_out"`) or training contexts of the run's data."""
    contexts = list(islice(run.data.contexts(held_out=split == "held_out"), n_contexts))
    if not contexts:
        raise FeatureReportError(f"--split {split}: the run's data holds no full context")
    return torch.stack(contexts)


@torch.no_grad()
def activation_pass(run: LoadedRun, tokens_NT: Tensor) -> ActivationPass:
    """One LM pass over the contexts, with a progress bar; the SAE encodes each batch on the way."""
    acts, maxima, fired = [], [], torch.zeros(run.sae.d_sae, dtype=torch.float64)
    ordinary_NT = ~run.model.special_token_mask(tokens_NT)
    batches = range(0, len(tokens_NT), LM_BATCH_CONTEXTS)
    for start in tqdm(batches, desc="feature pass", unit="batch", dynamic_ncols=True):
        tokens_BT = tokens_NT[start : start + LM_BATCH_CONTEXTS].to(run.model.device)
        acts_BTD = run.model.activations_at(tokens_BT, run.hook.read_point).float().cpu()  # what the SAE encodes
        latents_BTF = encode_ordinary(run, acts_BTD, ordinary_NT[start : start + LM_BATCH_CONTEXTS])
        acts.append(acts_BTD)
        maxima.append(latents_BTF.amax(dim=1))
        fired += (latents_BTF > 0).sum(dim=(0, 1)).double()
    return ActivationPass(
        tokens_NT, ordinary_NT, torch.cat(acts), (fired / ordinary_NT.sum()).float(), torch.cat(maxima)
    )


def encode_ordinary(run: LoadedRun, acts_BTD: Tensor, ordinary_BT: Tensor) -> Tensor:
    """The SAE's latents at every position, zero at special tokens."""
    latents_BTF = torch.zeros(*acts_BTD.shape[:2], run.sae.d_sae)
    device = next(run.sae.parameters()).device
    latents_BTF[ordinary_BT] = run.sae.encode(acts_BTD[ordinary_BT].to(device)).float().cpu()
    return latents_BTF


def latents_across_frequencies(firing_frequency_F: Tensor, n: int) -> list[int]:
    """`n` latents that cover the range of firing frequencies: evenly spaced quantiles of the alive
    latents ordered by frequency (the densest alone would hide what rare latents do)."""
    alive = torch.nonzero(firing_frequency_F > 0).squeeze(1)
    if len(alive) == 0:
        raise FeatureReportError("no latent fires on this text: nothing to show")
    by_frequency = alive[torch.argsort(firing_frequency_F[alive], descending=True, stable=True)]
    positions = torch.linspace(0, len(by_frequency) - 1, min(n, len(by_frequency))).round().long()
    return [int(by_frequency[p]) for p in positions.unique()]


def parse_latents(argument: str) -> int | list[int]:
    """`--latents`: a count ("24") or a comma-separated list of indices ("3,17,40")."""
    try:
        values = [int(part) for part in argument.split(",")]
    except ValueError:
        raise FeatureReportError(f"--latents {argument!r}: give a count (24) or latent indices (3,17,40)") from None
    return values if "," in argument else values[0]


def check_latents(latents: int | Sequence[int], d_sae: int) -> None:
    """A count of at least 1, or indices into the dictionary."""
    if isinstance(latents, int):
        if latents < 1:
            raise FeatureReportError(f"--latents {latents}: the count must be at least 1")
        return
    bad = [v for v in latents if not 0 <= v < d_sae]
    if bad:
        raise FeatureReportError(f"--latents: {bad} are not latent indices of this SAE (0..{d_sae - 1})")


@torch.no_grad()
def chosen_activations(run: LoadedRun, measured: ActivationPass, latents: Sequence[int]) -> Tensor:
    """[N, T, len(latents)]: the chosen latents' activations at every position, from one re-encoding of
    the stored activations (no second LM pass; 0 at special tokens)."""
    activations_NTL = torch.zeros(*measured.tokens_NT.shape, len(latents))
    device = next(run.sae.parameters()).device
    rows_RD = measured.acts_NTD[measured.ordinary_NT]
    chosen = torch.tensor(list(latents), device=device)
    activations_NTL[measured.ordinary_NT] = torch.cat(
        [run.sae.encode(batch_RD.to(device))[:, chosen].float().cpu() for batch_RD in rows_RD.split(ENCODE_BATCH_ROWS)]
    )
    return activations_NTL


def latent_report(run: LoadedRun, measured: ActivationPass, latent: int, activations_NT: Tensor, seed: int = 0) -> LatentReport:
    """The page content of one latent, given its activations at every position (`chosen_activations`)."""
    firing = activations_NT[activations_NT > 0]
    counts, edges = histogram(firing)
    strongest = measured.max_activation_NF[:, latent]
    top = [int(c) for c in torch.argsort(strongest, descending=True, stable=True)[:TOP_CONTEXTS] if strongest[c] > 0]
    others = [int(c) for c in torch.nonzero(strongest > 0).squeeze(1) if int(c) not in top]
    generator = torch.Generator().manual_seed(seed + latent)
    chosen = [others[i] for i in torch.randperm(len(others), generator=generator)[:RANDOM_CONTEXTS]]
    promoted, suppressed = logit_lens(run, latent)
    return LatentReport(
        latent=latent,
        firing_frequency=float(measured.firing_frequency_F[latent]),
        max_activation=float(strongest.max()),
        histogram_counts=counts,
        histogram_edges=edges,
        top_examples=[example(run, measured.tokens_NT, activations_NT, c) for c in top],
        random_examples=[example(run, measured.tokens_NT, activations_NT, c) for c in chosen],
        promoted_tokens=promoted,
        suppressed_tokens=suppressed,
    )


def histogram(values: Tensor, bins: int = HISTOGRAM_BINS) -> tuple[list[int], list[float]]:
    """Counts of `values` in `bins` equal bins from 0 to their maximum."""
    high = float(values.max()) if len(values) else 1.0
    counts = torch.histc(values, bins=bins, min=0.0, max=high) if len(values) else torch.zeros(bins)
    return [int(c) for c in counts], [high * i / bins for i in range(bins + 1)]


def example(run: LoadedRun, tokens_NT: Tensor, activations_NT: Tensor, context: int) -> Example:
    """The window of `context` around the latent's strongest activation in it."""
    peak = int(activations_NT[context].argmax())
    start, end = max(0, peak - WINDOW_BEFORE), min(tokens_NT.shape[1], peak + WINDOW_AFTER + 1)
    ids = tokens_NT[context, start:end].tolist()
    return Example(context, [token_text(run, i) for i in ids], activations_NT[context, start:end].tolist())


def token_text(run: LoadedRun, token_id: int) -> str:
    return run.model.tokenizer.decode([token_id])


@torch.no_grad()
def logit_lens(run: LoadedRun, latent: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """The tokens whose logits the latent's decoder direction raises and lowers most, read directly
    through the unembedding W_U (the final norm left out, as feature dashboards do: it rescales
    every logit of a position by one factor, which leaves the ranking of one direction unchanged
    up to its centring)."""
    direction_D = run.sae.W_dec[latent].float()
    logits_V = direction_D.to(run.model.bridge.W_U.device) @ run.model.bridge.W_U.float()
    top = torch.topk(logits_V, LOGIT_LENS_TOKENS)
    bottom = torch.topk(-logits_V, LOGIT_LENS_TOKENS)
    promoted = [(token_text(run, int(i)), float(v)) for v, i in zip(top.values, top.indices)]
    suppressed = [(token_text(run, int(i)), -float(v)) for v, i in zip(bottom.values, bottom.indices)]
    return promoted, suppressed


# --- HTML -------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 72em; color: #222; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; text-align: right; }
th { border-bottom: 1px solid #888; } td.left, th.left { text-align: left; }
.example { font-family: ui-monospace, monospace; white-space: pre-wrap; margin: 0.3em 0;
           padding: 0.3em; border-left: 3px solid #ddd; }
.example span { border-radius: 2px; }
.tokens span { font-family: ui-monospace, monospace; margin-right: 0.8em; }
section { margin-bottom: 2em; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        # no request may leave the page: everything it shows is in this file
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def svg_histogram(counts: Sequence[int], edges: Sequence[float], x_label: str, log_counts: bool = False) -> str:
    """An inline SVG bar chart of a histogram."""
    width, height, margin = 480, 160, 30
    heights = [math.log10(1 + c) if log_counts else c for c in counts]
    top = max(heights) or 1.0
    bar = (width - 2 * margin) / len(counts)
    bars = "".join(
        f"<rect x='{margin + i * bar:.1f}' y='{height - margin - h / top * (height - 2 * margin):.1f}' "
        f"width='{max(bar - 1, 1):.1f}' height='{h / top * (height - 2 * margin):.1f}' fill='#4a7ab7'>"
        f"<title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {c}</title></rect>"
        for i, (h, c) in enumerate(zip(heights, counts))
    )
    axis_y = height - margin
    labels = (
        f"<text x='{margin}' y='{axis_y + 14}' font-size='11'>{edges[0]:.3g}</text>"
        f"<text x='{width - margin}' y='{axis_y + 14}' font-size='11' text-anchor='end'>{edges[-1]:.3g}</text>"
        f"<text x='{width / 2}' y='{height - 4}' font-size='11' text-anchor='middle'>{html.escape(x_label)}</text>"
    )
    axis = f"<line x1='{margin}' y1='{axis_y}' x2='{width - margin}' y2='{axis_y}' stroke='#888'/>"
    return f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img'>{bars}{axis}{labels}</svg>"


def shaded_example(item: Example, max_activation: float) -> str:
    """The window with each token's background shaded by the latent's activation there."""
    spans = []
    for token, value in zip(item.tokens, item.activations):
        alpha = min(value / max_activation, 1.0) if max_activation > 0 else 0.0
        text = html.escape(token.replace("\n", "\u21b5"))
        spans.append(f"<span style='background: rgba(230, 90, 30, {alpha:.2f})' title='{value:.3f}'>{text}</span>")
    return f"<div class='example'>{''.join(spans)}</div>"


def token_list(tokens: Sequence[tuple[str, float]]) -> str:
    return "".join(f"<span>{html.escape(repr(t))} {v:+.2f}</span>" for t, v in tokens)


def latent_page(report: LatentReport, run_name: str) -> str:
    top = "".join(shaded_example(e, report.max_activation) for e in report.top_examples)
    random_examples = "".join(shaded_example(e, report.max_activation) for e in report.random_examples)
    body = f"""<p><a href='index.html'>index</a> &middot; {html.escape(run_name)}</p>
<h1>Latent {report.latent}</h1>
<section id='statistics'><h2>Statistics</h2><p>fires on {report.firing_frequency:.3%} of tokens;
largest activation {report.max_activation:.3f}</p>
{svg_histogram(report.histogram_counts, report.histogram_edges, "activation (nonzero)")}</section>
<section id='top-contexts'><h2>Top-activating contexts</h2>{top or '<p>none</p>'}</section>
<section id='random-contexts'><h2>Random activating contexts</h2>{random_examples or '<p>none beyond the top ones</p>'}</section>
<section id='logit-lens'><h2>Logit lens</h2>
<p>promoted</p><p class='tokens'>{token_list(report.promoted_tokens)}</p>
<p>suppressed</p><p class='tokens'>{token_list(report.suppressed_tokens)}</p></section>"""
    return page(f"latent {report.latent}", body)


def index_page(reports: Sequence[LatentReport], firing_frequency_F: Tensor, run_name: str, text_note: str) -> str:
    log_frequency = torch.log10(firing_frequency_F[firing_frequency_F > 0])
    dead = int((firing_frequency_F == 0).sum())
    low = float(log_frequency.min()) if len(log_frequency) else -6.0
    counts = torch.histc(log_frequency, bins=HISTOGRAM_BINS, min=low, max=0.0) if len(log_frequency) else torch.zeros(1)
    edges = [low + (0.0 - low) * i / len(counts) for i in range(len(counts) + 1)]
    rows = "".join(
        f"<tr><td class='left'><a href='latent_{r.latent}.html'>{r.latent}</a></td><td>{r.firing_frequency:.4%}</td>"
        f"<td>{r.max_activation:.3f}</td><td class='left'>{html.escape(top_tokens_line(r))}</td></tr>"
        for r in sorted(reports, key=lambda r: r.firing_frequency, reverse=True)
    )
    body = f"""<h1>Features of {html.escape(run_name)}</h1><p>{html.escape(text_note)}</p>
<section id='density'><h2>Feature density</h2>
<p>log10 firing frequency of the {len(firing_frequency_F)} latents; {dead} never fire on this text</p>
{svg_histogram([int(c) for c in counts], edges, "log10 firing frequency", log_counts=True)}</section>
<section id='latents'><h2>Latents by firing frequency</h2>
<table><tr><th class='left'>latent</th><th>frequency</th><th>max act.</th><th class='left'>strongest tokens</th></tr>
{rows}</table></section>"""
    return page(f"features of {run_name}", body)


def top_tokens_line(report: LatentReport) -> str:
    """The tokens where the top examples peak: a one-line hint of what the latent responds to."""
    peaks = [e.tokens[max(range(len(e.activations)), key=e.activations.__getitem__)] for e in report.top_examples[:5]]
    return " | ".join(repr(t) for t in peaks)


def write_feature_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    latents: int | Sequence[int] = DEFAULT_LATENTS,
    n_contexts: int = DEFAULT_CONTEXTS,
    split: str = "held_out",
) -> Path:
    """Write the feature browser of the run in `run_dir` to `out_dir` (default RUN_DIR/features);
    return the index page's path."""
    check_latents(latents, finished_run_summary(run_dir)["d_sae"])
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "features"
    tokens_NT = held_out_or_training_contexts(run, n_contexts, split)
    measured = activation_pass(run, tokens_NT)
    chosen = latents_across_frequencies(measured.firing_frequency_F, latents) if isinstance(latents, int) else list(latents)
    activations_NTL = chosen_activations(run, measured, chosen)
    reports = [latent_report(run, measured, latent, activations_NTL[..., i]) for i, latent in enumerate(chosen)]
    name = str(run.summary.get("run_dir", run_dir))
    note = f"{len(tokens_NT)} {split.replace('_', '-')} contexts of {tokens_NT.shape[1]} tokens at {run.hook.name}"
    out.mkdir(parents=True, exist_ok=True)
    for report in reports:
        (out / f"latent_{report.latent}.html").write_text(latent_page(report, name))
    index = out / "index.html"
    index.write_text(index_page(reports, measured.firing_frequency_F, name, note))
    return index


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m analysis.features", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run directory (holds summary.json and sae/)")
    parser.add_argument("--latents", default=str(DEFAULT_LATENTS),
                        help=f"how many latents, chosen across the frequency range (default {DEFAULT_LATENTS}), or indices: 3,17,40")
    parser.add_argument("--contexts", type=int, default=DEFAULT_CONTEXTS, help=f"contexts in the pass (default {DEFAULT_CONTEXTS})")
    parser.add_argument("--split", choices=("held_out", "train"), default="held_out", help="which text (default held_out)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/features)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.contexts < 1:
            raise FeatureReportError(f"--contexts {args.contexts}: must be at least 1")
        index = write_feature_report(args.run_dir, args.out, parse_latents(args.latents), args.contexts, args.split)
    except (FeatureReportError, FileNotFoundError) as error:
        print(f"error: {error}")
        return 2
    print(f"feature browser: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
