"""The LM's pass from a layer on (sae_sweeps/models/language_model.py): it computes only the blocks from
that layer, and gives the logits of the whole forward pass."""

import torch

from sae_sweeps.models.loading import load_tiny_model


def test_a_pass_from_a_layer_computes_no_earlier_block_and_gives_the_whole_pass_logits(cache_dir):
    model = load_tiny_model("tiny3", str(cache_dir / "models"), n_layers=3, d_model=64, d_mlp=128)
    tokens_BT = torch.randint(0, model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    tokens_BT[:, 0] = model.bos_token_id
    mlp_calls = [0] * model.n_layers
    for layer, block in enumerate(model.bridge.blocks):
        block.original_component.mlp.register_forward_hook(lambda *args, layer=layer: mlp_calls.__setitem__(layer, mlp_calls[layer] + 1))
    with torch.no_grad():
        whole_BTV = model.bridge(tokens_BT)
        resid_BTD = model.residual_before(tokens_BT, 2)
        mlp_calls[:] = [0] * model.n_layers
        from_layer_BTV = model.logits_from(resid_BTD, 2)
        assert mlp_calls == [0, 0, 1]
        assert torch.allclose(from_layer_BTV, whole_BTV, atol=1e-5)
        # The skipped blocks compute again in a whole pass afterwards.
        mlp_calls[:] = [0] * model.n_layers
        assert torch.equal(model.bridge(tokens_BT), whole_BTV)
        assert mlp_calls == [1, 1, 1]
