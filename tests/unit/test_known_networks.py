"""Parameter counts of well-known networks, and layers compared with the torch modules they wrap."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from dlmodels.builder import build_model, summarize
from dlmodels.spec import HEIGHTS_LAYERS, ModelSpec

torch.set_num_threads(2)


def model(input_shape: list[int], *layers: dict[str, Any]) -> ModelSpec:
    return ModelSpec.model_validate({"input_shape": input_shape, "layers": list(layers)})


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_course_keras_example() -> None:
    """input [1] -> dense 64 relu -> dense 64 relu -> dense 1: Keras prints 4,353 params."""
    spec = model([1], *HEIGHTS_LAYERS)
    summary = summarize(spec)
    assert [r.params for r in summary.layers] == [128, 4160, 65]
    assert [r.output_shape for r in summary.layers] == [[64], [64], [1]]
    assert summary.total_params == summary.trainable_params == 4353
    assert count(build_model(spec)) == 4353
    assert "Total params: 4,353" in summary.to_text()


def test_lenet5() -> None:
    spec = model(
        [1, 32, 32],
        {"type": "conv2d", "filters": 6, "kernel_size": 5, "activation": "tanh"},
        {"type": "avgpool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": 5, "activation": "tanh"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 120, "activation": "tanh"},
        {"type": "dense", "units": 84, "activation": "tanh"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    )
    summary = summarize(spec)
    assert [r.output_shape for r in summary.layers] == [
        [6, 28, 28], [6, 14, 14], [16, 10, 10], [16, 5, 5], [400], [120], [84], [10]]
    assert [r.params for r in summary.layers] == [156, 0, 2416, 0, 0, 48120, 10164, 850]
    assert summary.total_params == 61706
    net = build_model(spec)
    assert count(net) == 61706
    probabilities = net(torch.randn(3, 1, 32, 32))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("kind,torch_cls", [("lstm", nn.LSTM), ("gru", nn.GRU), ("rnn", nn.RNN)])
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_recurrent_equals_torch(kind: str, torch_cls: type[nn.RNNBase], num_layers: int,
                                bidirectional: bool) -> None:
    spec = model([6, 7], {"type": kind, "units": 16, "num_layers": num_layers,
                          "bidirectional": bidirectional, "return_sequences": True})
    reference = torch_cls(7, 16, num_layers=num_layers, bidirectional=bidirectional,
                          batch_first=True)
    built = build_model(spec).layers[0].rnn
    # Count for count, tensor for tensor (lstm: PyTorch's two bias vectors per direction).
    assert [(n, p.shape) for n, p in built.named_parameters()] == [
        (n, p.shape) for n, p in reference.named_parameters()]
    assert summarize(spec).total_params == count(reference)
    # Same weights, same outputs.
    reference.load_state_dict(built.state_dict())
    x = torch.randn(3, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(built(x)[0], reference(x)[0])


def test_lstm_count_by_formula() -> None:
    # 4 gates x (input weights + recurrent weights + two biases)
    f, h = 10, 32
    spec = model([5, f], {"type": "lstm", "units": h})
    assert summarize(spec).total_params == 4 * (h * f + h * h + 2 * h) == 5632


@pytest.mark.parametrize("num_layers,norm_first,activation", [
    (1, False, "relu"), (3, True, "gelu")])
def test_transformer_encoder_equals_torch(num_layers: int, norm_first: bool,
                                          activation: str) -> None:
    d, heads, ff = 32, 4, 64
    spec = model([10, d], {"type": "transformer_encoder", "num_heads": heads,
                           "dim_feedforward": ff, "num_layers": num_layers,
                           "norm_first": norm_first, "activation": activation})
    reference = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True, norm_first=norm_first,
                                           activation=activation)
    built = build_model(spec).layers[0]
    assert len(built.layers) == num_layers
    for layer in built.layers:
        assert [(n, p.shape) for n, p in layer.named_parameters()] == [
            (n, p.shape) for n, p in reference.named_parameters()]
    # in_proj 3*(d*d+d) + out_proj d*d+d + linear1 d*ff+ff + linear2 ff*d+d + 2 norms 2*2d
    assert count(reference) == 8544
    assert summarize(spec).total_params == num_layers * 8544 == count(built)


@pytest.mark.parametrize("input_shape", [[5], [5, 11], [5, 4, 4]])
def test_batchnorm_two_params_per_channel(input_shape: list[int]) -> None:
    spec = model(input_shape, {"type": "batchnorm"})
    assert summarize(spec).total_params == 10
    norm = build_model(spec).layers[0]
    assert count(norm) == 10
    # The running statistics are buffers, saved but not counted.
    assert {"running_mean", "running_var"} <= {n for n, _ in norm.named_buffers()}


def test_layernorm_and_embedding_counts() -> None:
    assert summarize(model([4, 12], {"type": "layernorm"})).total_params == 24
    spec = ModelSpec.model_validate({"input_shape": [9], "input_dtype": "int", "layers": [
        {"type": "embedding", "num_embeddings": 100, "embedding_dim": 16}]})
    assert summarize(spec).total_params == 1600
    assert summarize(spec).layers[0].output_shape == [9, 16]
