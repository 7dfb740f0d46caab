from __future__ import annotations

import io
import json
import sys

import pytest
import torch
from torch import nn

import search_spaces
from dvolver import output_check
from dvolver.errors import DvolverError
from dvolver.export import FORMATS, Exported, ExportError, _check, export, load_weights
from dvolver.spec import SearchSpec
from search_spaces.nasnet import NASNET_A, join, parse_cell

DIGITS = (1, 8, 8)
NB201_CELL = (3, 1, 2, 4, 0, 3)  # every op kind, and a dead edge
NB201_SHAPE = (3, 16, 16)


def nasnet_spec(blocks: int = 5) -> SearchSpec:
    return SearchSpec.from_dict({"space_options": {"filters": 4, "blocks": blocks}})


# Tracing time grows with the graph, so the traced NASNet is a 2-block one that still holds all six
# ops, an extra_concat and a reduction cell that outputs one of its inputs (a FactorizedReduce).
SMALL_NASNET = join(parse_cell("0 sep3, 1 id | 2 avg, 0 sep5 | extra [1]"),
                    parse_cell("0 sep7, 1 max | 2 id, 1 avg | extra [0]"))


def nb201_spec() -> SearchSpec:
    # Trained NB201 (no table): the same network a table search looks up, built to hold weights.
    return SearchSpec.from_dict({"space": "nb201", "space_options": {"channels": 4, "cells_per_stage": 1}})


def trained_weights(spec: SearchSpec, genome: tuple[int, ...], shape: tuple[int, int, int], *,
                    channels_last: bool = False) -> bytes:
    """What training stores: BatchNorm statistics and affine terms far from their defaults included."""
    torch.manual_seed(1)
    model = search_spaces.make_space(spec.space, spec.space_options).build(genome, shape, 10)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(100)
            elif isinstance(module, nn.Linear):
                module.bias.normal_(0, 0.1)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def eager(spec: SearchSpec, genome: tuple[int, ...], shape: tuple[int, int, int], weights: bytes) -> nn.Module:
    model = search_spaces.make_space(spec.space, spec.space_options).build(genome, shape, 10)
    model.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
    return model.eval()


# NB201's weights come from a channels-last model, as CPU training leaves them; NASNet's are contiguous.
CASES = {
    "nasnet": (lambda: nasnet_spec(blocks=2), SMALL_NASNET, DIGITS, False),
    "nb201": (nb201_spec, NB201_CELL, NB201_SHAPE, True),
}


@pytest.fixture(scope="module")
def candidates() -> dict[str, tuple[SearchSpec, tuple[int, ...], tuple[int, int, int], bytes]]:
    out = {}
    for space, (make_spec, genome, shape, channels_last) in CASES.items():
        spec = make_spec()
        out[space] = (spec, genome, shape, trained_weights(spec, genome, shape, channels_last=channels_last))
    return out


def load_back(fmt: str, exported: Exported, spec: SearchSpec, genome, shape):
    """Open the file the way its user would; returns a function from an NCHW batch to logits."""
    if fmt == "state_dict":
        return eager(spec, genome, shape, exported.data)
    if fmt == "torch_export":
        extra = {"dvolver.json": ""}
        module = torch.export.load(io.BytesIO(exported.data), extra_files=extra).module()
        assert json.loads(extra["dvolver.json"])["genome"] == list(genome)
        return module
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    meta = {p.key: p.value for p in onnx.load_from_string(exported.data).metadata_props}
    assert json.loads(meta["dvolver.json"])["genome"] == list(genome)
    session = ort.InferenceSession(exported.data, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"input": x.numpy()})[0])


@pytest.mark.parametrize("space", list(CASES))
@pytest.mark.parametrize("fmt", ["state_dict", "torch_export", "onnx"])
def test_each_model_format_reproduces_the_trained_network(candidates, space, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    spec, genome, shape, weights = candidates[space]
    recorded = output_check.record(eager(spec, genome, shape, weights), shape)  # as evaluation records them
    rng_before = torch.random.get_rng_state()
    exported = export(spec, genome, fmt, weights=weights, input_shape=shape, num_classes=10,
                      name=f"search3-cand17-{space}", recorded=recorded)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the caller's random stream is untouched
    assert exported.checked_against == "evaluation"
    assert capsys.readouterr().out == ""  # the exporters' progress lines stay off a CLI's stdout
    suffix = {"state_dict": "pt", "torch_export": "pt2", "onnx": "onnx"}[fmt]
    assert exported.filename == f"search3-cand17-{space}.{suffix}"
    assert exported.media_type == "application/octet-stream"

    # A batch size other than the one the export was traced with: the batch dimension is free.
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(7))
    model = eager(spec, genome, shape, weights)
    with torch.no_grad():
        expected = model(x)
        got = load_back(fmt, exported, spec, genome, shape)(x)
    assert got.shape == (3, 10)
    assert expected.abs().max() > 0.01  # the weights make a difference to the check
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_nasnet_a_weights_export_as_a_state_dict():
    spec = nasnet_spec()
    weights = trained_weights(spec, NASNET_A, DIGITS, channels_last=True)
    exported = export(spec, NASNET_A, "state_dict", weights=weights, input_shape=DIGITS, num_classes=10, name="a")
    assert exported.data == weights and exported.filename == "a.pt"


def test_genotype_is_json_and_needs_no_weights():
    spec = nasnet_spec()
    info = {"key": "nasnet:1,2", "objectives": {"acc": 91.5, "flops": 1.2e6}, "metrics": {"test_acc": float("nan")}}
    exported = export(spec, NASNET_A, "genotype", weights=None, input_shape=DIGITS, num_classes=10,
                      name="search 3/cand:17", info=info)
    assert exported.media_type == "application/json"
    assert exported.filename == "search_3_cand_17.json"
    doc = json.loads(exported.data)
    assert doc["space"] == "nasnet"
    assert doc["space_options"]["filters"] == 4
    assert doc["genome"] == list(NASNET_A)
    assert doc["architecture"] == search_spaces.make_space("nasnet", spec.space_options).describe(NASNET_A)
    assert doc["input_shape"] == [1, 8, 8] and doc["num_classes"] == 10
    assert doc["info"]["objectives"] == {"acc": 91.5, "flops": 1.2e6}
    assert doc["info"]["metrics"]["test_acc"] is None  # strict JSON: no NaN


def test_a_table_search_exports_its_genotype_even_after_the_table_moved():
    spec = SearchSpec.from_stored({"space": "nb201", "space_options": {"table": "/gone/nb201.csv"}})
    doc = json.loads(export(spec, NB201_CELL, "genotype", weights=None, input_shape=(3, 32, 32), num_classes=10,
                            name="t").data)
    assert doc["architecture"]["arch_str"] == (
        "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|")
    with pytest.raises(ExportError, match="no trained weights.*only 'genotype'"):
        export(spec, NB201_CELL, "onnx", weights=None, input_shape=(3, 32, 32), num_classes=10, name="t")


@pytest.mark.parametrize("fmt", ["state_dict", "torch_export", "onnx"])
def test_model_formats_need_weights(fmt):
    with pytest.raises(ExportError, match="no trained weights"):
        export(nasnet_spec(), NASNET_A, fmt, weights=None, input_shape=DIGITS, num_classes=10, name="c")


def test_unknown_format_names_the_valid_ones():
    valid = "genotype, state_dict, sparse, torch_export, onnx"
    with pytest.raises(ExportError, match=f"unknown export format 'tflite'.*{valid}"):
        export(nasnet_spec(), NASNET_A, "tflite", weights=b"", input_shape=DIGITS, num_classes=10, name="c")
    assert issubclass(ExportError, DvolverError)
    assert FORMATS == ("genotype", "state_dict", "sparse", "torch_export", "onnx")


def test_weights_of_another_architecture_are_refused(candidates):
    spec, _, _, nb201_weights = candidates["nb201"]
    nasnet_weights = candidates["nasnet"][3]
    with pytest.raises(ExportError, match="do not fit this architecture"):
        export(nasnet_spec(), NASNET_A, "state_dict", weights=nb201_weights, input_shape=DIGITS, num_classes=10,
               name="c")
    with pytest.raises(ExportError, match="do not fit this architecture"):  # same space, other cell
        export(spec, (3, 3, 3, 3, 3, 3), "torch_export", weights=nb201_weights, input_shape=NB201_SHAPE,
               num_classes=10, name="c")
    with pytest.raises(ExportError, match="do not fit this architecture"):  # same cell, other class count
        export(candidates["nasnet"][0], SMALL_NASNET, "state_dict", weights=nasnet_weights, input_shape=DIGITS,
               num_classes=3, name="c")
    with pytest.raises(ExportError, match="cannot be read as a state_dict"):
        export(nasnet_spec(), NASNET_A, "state_dict", weights=b"not a checkpoint", input_shape=DIGITS,
               num_classes=10, name="c")


def test_a_genome_from_another_space_is_refused():
    with pytest.raises(ExportError, match="does not belong to the nb201 space"):
        export(nb201_spec(), NASNET_A, "genotype", weights=None, input_shape=DIGITS, num_classes=10, name="c")


def test_an_export_that_disagrees_with_the_model_raises(candidates, monkeypatch):
    spec, genome, shape, weights = candidates["nb201"]
    monkeypatch.setattr("dvolver.export.TOLERANCE", -1.0)  # any difference, even 0, now counts as too large
    with pytest.raises(ExportError, match="does not reproduce the model: max abs difference"):
        export(spec, genome, "state_dict", weights=weights, input_shape=shape, num_classes=10, name="c")


@pytest.mark.parametrize("fmt", ["state_dict", "torch_export"])
def test_stored_weights_that_are_not_the_evaluated_ones_are_refused(candidates, fmt):
    """Weights of the right shapes but other values (a file overwritten, a row mixed up) load and agree
    with themselves: only the outputs recorded at evaluation can tell."""
    spec, genome, shape, weights = candidates["nb201"]
    recorded = output_check.record(eager(spec, genome, shape, weights), shape)
    state = torch.load(io.BytesIO(weights), weights_only=True)
    state["head.4.bias"] = state["head.4.bias"] + 0.01  # the classifier's bias, slightly off
    other = io.BytesIO()
    torch.save(state, other)
    with pytest.raises(ExportError, match="reproduce the network as evaluated: max abs difference in outputs 0.01 "):
        export(spec, genome, fmt, weights=other.getvalue(), input_shape=shape, num_classes=10, name="c",
               recorded=recorded)


def test_without_recorded_outputs_an_export_says_it_was_checked_against_its_stored_weights(candidates, caplog):
    spec, genome, shape, weights = candidates["nb201"]
    exported = export(spec, genome, "state_dict", weights=weights, input_shape=shape, num_classes=10, name="old")
    assert exported.checked_against == "stored weights"
    assert "old has no outputs recorded at evaluation" in caplog.text
    genotype = export(spec, genome, "genotype", weights=None, input_shape=shape, num_classes=10, name="old")
    assert genotype.checked_against is None


def test_a_searched_candidate_exports_checked_against_its_evaluation(tmp_path):
    from dvolver import run_search
    from dvolver.export import export_candidate
    from dvolver.store import Store
    from tests.helpers import TINY

    db = str(tmp_path / "dvolver.db")
    result = run_search(TINY | {"evaluations": 2, "population": 2}, db=db, executor="inline")
    best = result.front[0]
    assert len(best.metrics[output_check.METRIC]) == output_check.BATCH
    for fmt in ("state_dict", "torch_export"):
        assert export_candidate(Store(db), 1, best.id, fmt).checked_against == "evaluation"


def test_onnx_without_its_packages_names_the_extra(candidates, monkeypatch):
    spec, genome, shape, weights = candidates["nb201"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now fails as if not installed
    with pytest.raises(ExportError, match=r"pip install 'dvolver\[onnx\]'"):
        export(spec, genome, "onnx", weights=weights, input_shape=shape, num_classes=10, name="c")


def test_load_weights_is_reusable_on_any_model(candidates):
    spec, genome, shape, weights = candidates["nb201"]
    model = search_spaces.make_space(spec.space, spec.space_options).build(genome, shape, 10)
    load_weights(model, weights)
    assert torch.equal(model.head[-1].bias, eager(spec, genome, shape, weights).head[-1].bias)
    buffer = io.BytesIO()
    torch.save([torch.zeros(1)], buffer)
    with pytest.raises(ExportError, match="not a state_dict"):
        load_weights(model, buffer.getvalue())


def test_the_check_tells_nan_on_one_side_from_nan_on_both():
    logits = torch.tensor([[1.0, float("nan"), float("inf")]])
    _check("onnx", logits, logits.clone())
    with pytest.raises(ExportError, match="max abs difference in outputs nan"):
        _check("onnx", logits, torch.tensor([[1.0, 0.0, float("inf")]]))
    with pytest.raises(ExportError, match="shape"):
        _check("onnx", logits, logits[:, :2])
