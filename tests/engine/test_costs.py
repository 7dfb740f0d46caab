import torch
from torch import nn

from dvolver.costs import count, latency_ms


def test_macs_of_a_hand_computable_network_equal_the_formula():
    # conv 3->8, 3x3, padding 1 on 8x8: each of the 8*8*8 outputs takes 3*3*3 multiply-adds;
    # linear 512->10: 5120 multiply-adds.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10))
    costs = count(model, (3, 8, 8))
    expected_macs = 8 * 8 * 8 * 3 * 3 * 3 + 512 * 10
    assert costs.macs == expected_macs
    assert costs.flops == 2 * expected_macs
    assert costs.params == 3 * 8 * 9 + 512 * 10 + 10


def test_uncounted_ops_are_recorded_not_hidden():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 2))
    costs = count(model, (1, 8, 8))
    assert "aten::max_pool2d" in costs.uncounted_ops
    assert costs.macs == 6 * 6 * 4 * 9 + 36 * 2


def test_counting_leaves_the_model_in_its_mode_and_latency_is_positive():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    model.train()
    count(model, (1, 8, 8))
    assert model.training
    assert latency_ms(model, (1, 8, 8), repeats=5, warmup=1) > 0
    assert model.training
    assert not torch.is_inference_mode_enabled()


def test_pruned_weights_give_sparse_macs_beside_the_dense_count():
    import torch
    from torch import nn

    from dvolver import costs

    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    dense = costs.count(model, (1, 8, 8))
    assert dense.macs == 4 * 9 * 36 + 144 * 10 and dense.sparse_macs is None
    assert "sparse_macs" not in dense.as_metrics()
    with torch.no_grad():
        model[0].weight[:2].zero_()  # half the conv weights
        model[3].weight[:, :36].zero_()  # a quarter of the linear weights
    pruned = costs.count(model, (1, 8, 8)).as_metrics()
    assert pruned["macs"] == dense.macs  # the dense count is unchanged, and labelled as such
    assert pruned["sparse_macs"] == 1296 // 2 + 1440 * 3 // 4
    assert pruned["sparse_flops"] == 2 * pruned["sparse_macs"]
    assert pruned["nonzero_params"] == dense.params - 18 - 360
