import pytest

from dvolver.errors import SpecError
from dvolver.spec import SearchSpec


def test_defaults_are_a_valid_nasnet_search_on_digits():
    spec = SearchSpec.from_dict({})
    assert (spec.space, spec.dataset, spec.objectives, spec.algorithm) == ("nasnet", "digits", ["acc", "flops"],
                                                                         "surrogate")
    assert spec.batch is None  # the surrogate search then asks population // 4 at a time
    assert spec.space_options == {"cells_per_stage": 1, "filters": 8, "blocks": 5, "stem_multiplier": 3}


@pytest.mark.parametrize("values, message", [
    ({"space_options": {"filters": 1, "colour": "red"}},
     "space_options for nasnet: filters: Input should be greater than or equal to 2; colour: Extra inputs"),
    ({"constraints": {"max_flops": float("nan")}}, "constraint max_flops must be a finite number"),
    ({"constraints": {"max_speed": 3}}, "unknown constraint 'max_speed'"),
    ({"objectives": ["acc", "acc"]}, "an objective is named twice"),
    ({"batch": 0}, "batch: Input should be greater than or equal to 1"),
    ({"constraints": {"min_acc": 100.5}}, "min_acc is a validation accuracy in %, at most 100, got 100.5"),
    ({"batch": 41, "evaluations": 40}, "batch: 41 candidates at a time is more than the whole budget of 40"),
    ({"batch": 4, "algorithm": "nsga2"}, "batch: only the surrogate search asks in batches"),
    ({"training": {"patience": 3}}, "training.patience: only pruning methods that keep their best epoch"),
    ({"seed": False}, "seed: a number is needed here, got False"),  # lax pydantic read it as 0
    ({"training": {"lr": "0.1"}}, "training.lr: a number is needed here, got '0.1'"),
    ({"overlap": "yes"}, "overlap: Input should be a valid boolean"),
    ({"constraints": {"max_flops": True}}, "constraints.max_flops: Input should be a valid number"),  # not 1
    ({"constraints": {"max_flops": "5e6"}}, "constraints.max_flops: Input should be a valid number"),
])
def test_invalid_fields_are_named(values, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        SearchSpec.from_dict(values)


def test_table_searches_only_use_what_the_table_has(nb201_table):
    table = {"space": "nb201", "space_options": {"table": str(nb201_table)}}
    assert SearchSpec.from_dict(table | {"objectives": ["acc", "params"], "constraints": {"max_flops": 5e7}})
    with pytest.raises(SpecError, match="objective latency is not in the table"):
        SearchSpec.from_dict(table | {"objectives": ["acc", "latency"]})
    with pytest.raises(SpecError, match="constraint max_macs needs a measure the table does not have"):
        SearchSpec.from_dict(table | {"constraints": {"max_macs": 1e6}})


def test_a_table_missing_cells_is_refused(nb201_table, tmp_path):
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(nb201_table.read_text().splitlines(keepends=True)[:101]))
    with pytest.raises(SpecError, match="lists 100 cells; a table search needs all 15625"):
        SearchSpec.from_dict({"space": "nb201", "space_options": {"table": str(partial)}})


def test_stored_specs_load_even_when_their_data_moved(tmp_path, cifar_npz):
    copy = tmp_path / "c.npz"
    copy.write_bytes(cifar_npz.read_bytes())
    stored = SearchSpec.from_dict({"dataset": str(copy)}).model_dump(mode="json")
    copy.unlink()
    assert SearchSpec.from_stored(stored).dataset == str(copy)
    with pytest.raises(SpecError, match="does not exist"):
        SearchSpec.from_dict(stored)


def test_fields_that_only_fail_together_pass_apart_and_stored_searches_still_load():
    assert SearchSpec.from_dict({"constraints": {"min_acc": 100}}).constraints == {"min_acc": 100}
    assert SearchSpec.from_dict({"batch": 40, "evaluations": 40}).batch == 40
    pruned = {"space": "conv2", "pruning": {"methods": ["edgepopup"], "budgets": [0.5]}, "training": {"patience": 3}}
    assert SearchSpec.from_dict(pruned).training.patience == 3
    # Accepted before these checks existed: a stored search must still resume.
    assert SearchSpec.from_stored({"batch": 50, "evaluations": 10}).batch == 50
