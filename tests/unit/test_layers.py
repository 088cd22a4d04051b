"""Every registered layer type: summarize()'s shapes and counts equal the really built module's.

The test is parametrized over the registry, so a new layer type fails here until it has an
example in EXAMPLES.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest
import torch

from dlmodels.activations import ACTIVATIONS
from dlmodels.builder import build_model, summarize
from dlmodels.layers import LAYERS
from dlmodels.layers.core import ActivationName
from dlmodels.spec import ModelSpec
from dlmodels.validate import validate_model

torch.set_num_threads(2)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")

ACTIVATION_NAMES = list(get_args(ActivationName))


def ex(input_shape: list[int], *layers: dict[str, Any], dtype: str = "float") -> dict[str, Any]:
    return {"input_shape": input_shape, "input_dtype": dtype, "layers": list(layers)}


# type name -> model specs that use it (with a fitting input shape).
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "dense": [
        ex([7], {"type": "dense", "units": 5}),
        ex([7], {"type": "dense", "units": 5, "activation": "relu", "use_bias": False}),
        ex([6, 4], {"type": "dense", "units": 3, "activation": "tanh"}),  # per step of [T, F]
        *[ex([4], {"type": "dense", "units": 3, "activation": a}) for a in ACTIVATION_NAMES],
        ex([4], {"type": "dense", "units": 3, "trainable": False}),
        ex([4], {"type": "dense", "units": 3, "init": {"weights": "xavier_normal",
                                                       "bias": "zeros"}}),
    ],
    "conv1d": [
        ex([3, 10], {"type": "conv1d", "filters": 4, "kernel_size": 3}),
        ex([3, 10], {"type": "conv1d", "filters": 4, "kernel_size": 3, "stride": 2,
                     "padding": 1, "activation": "relu"}),
        ex([2, 9], {"type": "conv1d", "filters": 4, "kernel_size": 4, "padding": "same"}),
        ex([2, 9], {"type": "conv1d", "filters": 4, "kernel_size": [5], "stride": [3],
                    "use_bias": False}),
    ],
    "conv2d": [
        ex([1, 8, 8], {"type": "conv2d", "filters": 3, "kernel_size": 3}),
        ex([2, 9, 7], {"type": "conv2d", "filters": 3, "kernel_size": [3, 2], "stride": [2, 1],
                       "padding": [1, 0], "activation": "gelu"}),
        ex([2, 7, 6], {"type": "conv2d", "filters": 5, "kernel_size": 3, "padding": "same"}),
        ex([2, 7, 6], {"type": "conv2d", "filters": 5, "kernel_size": [4, 2],
                       "padding": "same"}),  # even kernel: asymmetric padding
        ex([3, 11, 11], {"type": "conv2d", "filters": 2, "kernel_size": 5, "stride": 3,
                         "padding": 2}),
    ],
    "maxpool1d": [
        ex([3, 10], {"type": "maxpool1d", "pool_size": 2}),
        ex([3, 11], {"type": "maxpool1d", "pool_size": 3, "stride": 2, "padding": 1}),
    ],
    "maxpool2d": [
        ex([2, 8, 8], {"type": "maxpool2d", "pool_size": 2}),
        ex([2, 9, 7], {"type": "maxpool2d", "pool_size": [3, 2], "stride": 1,
                       "padding": [1, 1]}),
    ],
    "avgpool1d": [
        ex([3, 10], {"type": "avgpool1d", "pool_size": 2}),
        ex([3, 11], {"type": "avgpool1d", "pool_size": 4, "stride": 3, "padding": 2}),
    ],
    "avgpool2d": [
        ex([2, 8, 8], {"type": "avgpool2d", "pool_size": 2}),
        ex([2, 9, 7], {"type": "avgpool2d", "pool_size": 3, "stride": [2, 1], "padding": 1}),
    ],
    "global_avgpool": [
        ex([4, 6], {"type": "global_avgpool"}),
        ex([4, 5, 6], {"type": "global_avgpool"}),
    ],
    "flatten": [
        ex([2, 3, 4], {"type": "flatten"}),
        ex([5], {"type": "flatten"}),
    ],
    "dropout": [
        ex([6], {"type": "dropout", "rate": 0.3}),
        ex([2, 4, 4], {"type": "dropout"}),
    ],
    "batchnorm": [
        ex([6], {"type": "batchnorm"}),  # BatchNorm1d over features
        ex([4, 9], {"type": "batchnorm"}),  # BatchNorm1d over [C, L]
        ex([3, 5, 5], {"type": "batchnorm", "momentum": 0.2, "eps": 1e-3}),  # BatchNorm2d
    ],
    "layernorm": [
        ex([6], {"type": "layernorm"}),
        ex([5, 8], {"type": "layernorm"}),
    ],
    "activation": [
        *[ex([2, 5], {"type": "activation", "name": a}) for a in ACTIVATION_NAMES],
        ex([5], {"type": "activation", "name": "leaky_relu", "negative_slope": 0.2}),
    ],
    "embedding": [
        ex([7], {"type": "embedding", "num_embeddings": 20, "embedding_dim": 6}, dtype="int"),
    ],
    **{
        kind: [
            ex([5, 3], {"type": kind, "units": 4}),
            ex([5, 3], {"type": kind, "units": 4, "return_sequences": True}),
            ex([5, 3], {"type": kind, "units": 4, "num_layers": 2, "dropout": 0.1}),
            ex([5, 3], {"type": kind, "units": 4, "bidirectional": True}),
            ex([5, 3], {"type": kind, "units": 4, "num_layers": 2, "bidirectional": True,
                        "return_sequences": True}),
            ex([6], {"type": "embedding", "num_embeddings": 9, "embedding_dim": 3},
               {"type": kind, "units": 4, "bidirectional": True}, dtype="int"),
        ]
        for kind in ("rnn", "lstm", "gru")
    },
    "transformer_encoder": [
        ex([5, 8], {"type": "transformer_encoder", "num_heads": 2, "dim_feedforward": 16}),
        ex([5, 8], {"type": "transformer_encoder", "num_heads": 4, "dim_feedforward": 12,
                    "num_layers": 2, "activation": "gelu", "norm_first": True,
                    "dropout": 0.0}),
    ],
    "positional_encoding": [
        ex([5, 8], {"type": "positional_encoding"}),
        ex([5, 7], {"type": "positional_encoding", "kind": "sinusoidal"}),  # odd width
        ex([5, 8], {"type": "positional_encoding", "kind": "learned"}),
    ],
    "sequence_pool": [
        ex([5, 3], {"type": "sequence_pool", "mode": m}) for m in ("mean", "max", "last", "first")
    ],
    "residual": [
        ex([6], {"type": "residual", "layers": [{"type": "dense", "units": 6,
                                                 "activation": "relu"},
                                                {"type": "dense", "units": 6}]}),
        ex([6], {"type": "residual", "layers": [{"type": "dense", "units": 4}],
                 "shortcut": [{"type": "dense", "units": 4, "use_bias": False}]}),
        ex([3, 8, 8], {"type": "residual",
                       "layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3,
                                   "padding": "same", "activation": "relu"},
                                  {"type": "batchnorm"},
                                  {"type": "conv2d", "filters": 4, "kernel_size": 3,
                                   "stride": 2, "padding": 1}],
                       "shortcut": [{"type": "conv2d", "filters": 4, "kernel_size": 1,
                                     "stride": 2}]}),
        ex([4, 6], {"type": "residual", "layers": [
            {"type": "residual", "layers": [{"type": "layernorm"}, {"type": "dense", "units": 6}]},
            {"type": "dropout", "rate": 0.1}]}),
    ],
}


def random_inputs(spec: ModelSpec, batch: int = 3) -> torch.Tensor:
    if spec.input_dtype == "int":
        vocab = spec.layers[0].num_embeddings  # type: ignore[union-attr]
        return torch.randint(0, vocab, (batch, *spec.input_shape))
    return torch.randn(batch, *spec.input_shape)


def check_against_module(raw: dict[str, Any]) -> None:
    """summarize() == the built module on a real forward pass, layer by layer."""
    spec = ModelSpec.model_validate(raw)
    summary = validate_model(spec)
    model = build_model(spec).eval()
    shapes: list[list[int]] = []
    for layer in model.layers:
        layer.register_forward_hook(lambda _m, _i, out: shapes.append(list(out.shape[1:])))
    with torch.no_grad():
        out = model(random_inputs(spec))
    assert out.shape[0] == 3 and torch.isfinite(out).all()
    assert [row.output_shape for row in summary.layers] == shapes
    assert [row.params for row in summary.layers] == [
        sum(p.numel() for p in layer.parameters()) for layer in model.layers]
    assert [row.type for row in summary.layers] == [layer.type for layer in spec.layers]
    assert summary.total_params == sum(p.numel() for p in model.parameters())
    assert summary.trainable_params == sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.input_shape == list(spec.input_shape)
    assert summary.to_text()  # the Keras-like table renders


def test_activation_names_match_the_registry() -> None:
    assert sorted(ACTIVATION_NAMES) == ACTIVATIONS.names()


def test_every_example_names_a_registered_type() -> None:
    assert set(EXAMPLES) <= set(LAYERS.names())


@pytest.mark.parametrize("type_name", LAYERS.names())
def test_summary_matches_built_module(type_name: str) -> None:
    examples = EXAMPLES.get(type_name)
    if not examples:
        pytest.fail(f"layer type {type_name!r} is registered but has no example in EXAMPLES")
    for raw in examples:
        assert any(layer["type"] == type_name for layer in raw["layers"])
        check_against_module(raw)


def test_frozen_layer_is_not_trainable() -> None:
    spec = ModelSpec.model_validate(ex([4], {"type": "dense", "units": 3, "trainable": False},
                                       {"type": "dense", "units": 2}))
    summary = summarize(spec)
    assert summary.total_params == 15 + 8
    assert summary.trainable_params == 8


@pytest.mark.parametrize("kind,bidirectional,sequences,expected", [
    ("lstm", False, False, [4]), ("lstm", True, False, [8]), ("gru", False, True, [5, 4]),
    ("rnn", True, True, [5, 8]),
])
def test_recurrent_output_shapes(kind: str, bidirectional: bool, sequences: bool,
                                 expected: list[int]) -> None:
    spec = ModelSpec.model_validate(ex([5, 3], {"type": kind, "units": 4, "num_layers": 2,
                                                "bidirectional": bidirectional,
                                                "return_sequences": sequences}))
    assert summarize(spec).layers[0].output_shape == expected


def test_recurrent_last_state_is_last_step_of_the_sequence() -> None:
    """Unidirectional: the returned state equals the last step of return_sequences' output."""
    base = {"type": "gru", "units": 4, "num_layers": 2}
    last = build_model(ModelSpec.model_validate(ex([6, 3], base))).eval()
    seq = build_model(ModelSpec.model_validate(ex([6, 3], {**base, "return_sequences": True})))
    seq.load_state_dict(last.state_dict())
    x = torch.randn(3, 6, 3)
    with torch.no_grad():
        torch.testing.assert_close(last(x), seq.eval()(x)[:, -1])


@pytest.mark.parametrize("mode", ["mean", "max", "last", "first"])
def test_sequence_pool_modes(mode: str) -> None:
    model = build_model(ModelSpec.model_validate(ex([4, 2], {"type": "sequence_pool",
                                                             "mode": mode})))
    x = torch.randn(3, 4, 2)
    expected = {"mean": x.mean(1), "max": x.amax(1), "last": x[:, -1], "first": x[:, 0]}[mode]
    torch.testing.assert_close(model(x), expected)


def test_sinusoidal_positions_are_fixed_and_not_saved() -> None:
    model = build_model(ModelSpec.model_validate(ex([5, 6], {"type": "positional_encoding"})))
    assert sum(p.numel() for p in model.parameters()) == 0
    assert not any("table" in key for key in model.state_dict())
    out = model(torch.zeros(2, 5, 6))
    # Position 0: sin(0) = 0 on even, cos(0) = 1 on odd features.
    torch.testing.assert_close(out[0, 0], torch.tensor([0.0, 1.0] * 3))
    torch.testing.assert_close(out[0], out[1])


@pytest.mark.parametrize("weights,std", [("normal", 0.05), ("xavier_normal", None)])
def test_model_init_reaches_every_matrix_and_bias(weights: str, std: float | None) -> None:
    """Including attention's `in_proj_weight`/`in_proj_bias` and the LSTM's `weight_ih_l0`."""
    spec = ModelSpec.model_validate(ex(
        [12, 16], {"type": "transformer_encoder", "num_heads": 2, "dim_feedforward": 32},
        {"type": "lstm", "units": 8}, {"type": "dense", "units": 3, "init": {"weights": "default"}},
    ) | {"init": {"weights": weights, "bias": "zeros"}})
    torch.manual_seed(0)
    model = build_model(spec)
    for name, param in model.named_parameters():
        if name.startswith("layers.2"):  # the layer's own init wins, and keeps bias default
            assert not torch.all(param == 0), name
        elif "norm" in name:  # LayerNorm's 1-D scale and shift are left alone
            assert torch.all(param == (1 if name.endswith("weight") else 0)), name
        elif param.dim() == 1:
            assert torch.all(param == 0), name
        elif std is not None:
            assert abs(param.std().item() - std) < 0.01, name
