import math

import torch

from dvolver.data import load
from dvolver.spec import TrainingSpec
from dvolver.training import train
from search_spaces import make_space
from search_spaces.nasnet import NASNET_A


def _train(seed, **cfg):
    torch.manual_seed(seed)
    space = make_space("nasnet", {"filters": 4})
    data = load("digits")
    model = space.build(NASNET_A, data.input_shape, data.num_classes)
    return train(model, data, TrainingSpec(**cfg), seed, torch.device("cpu"))


def test_training_is_deterministic_under_a_seed():
    a = _train(3, epochs=1, train_limit=256)
    b = _train(3, epochs=1, train_limit=256)
    assert (a.val_acc, a.test_acc, a.train_loss) == (b.val_acc, b.test_acc, b.train_loss)


def test_nasnet_a_learns_digits_with_either_memory_format():
    for layout, schedule in (("on", "one_cycle"), ("off", "cosine")):
        result = _train(0, epochs=4, channels_last=layout, schedule=schedule)
        assert result.val_acc > 85, (layout, result)


def test_nasnet_a_learns_32x32_cifar(cifar_npz):
    torch.manual_seed(0)
    data = load(str(cifar_npz))
    model = make_space("nasnet", {"filters": 4}).build(NASNET_A, data.input_shape, data.num_classes)
    result = train(model, data, TrainingSpec(epochs=2, train_limit=2000), 0, torch.device("cpu"))
    assert result.val_acc > 20  # ten classes: chance is 10 %


def test_one_cycle_with_too_few_steps_for_its_warm_up_still_trains():
    # OneCycleLR divides by zero at exactly 4 steps (warm-up 25 %) and has no warm-up below that, where a
    # single step would run at lr ~0: every step must run at a real learning rate, and the training with it.
    from dvolver.training import make_scheduler

    for steps in (1, 4):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler, lrs = make_scheduler(optimizer, "one_cycle", steps), []
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert all(math.isfinite(lr) for lr in lrs) and max(lrs) >= 0.05, (steps, lrs)
        result = _train(0, epochs=1, train_limit=64 * steps, batch_size=64, schedule="one_cycle")
        assert math.isfinite(result.train_loss), (steps, result)


def test_mixed_precision_is_for_cuda_only_and_off_when_asked():
    import torch

    from dvolver.spec import TrainingSpec
    from dvolver.training import autocast_dtype

    assert autocast_dtype(TrainingSpec(), torch.device("cpu")) is None  # it would only slow the CPU down
    assert autocast_dtype(TrainingSpec(amp="off"), torch.device("cuda")) is None


def test_a_constant_schedule_keeps_each_groups_own_lr_and_the_others_move_it():
    from dvolver.training import make_scheduler

    for schedule in ("constant", "one_cycle", "cosine"):
        optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 50.0},
                                     {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1e-3}])
        scheduler = make_scheduler(optimizer, schedule, 20)
        seen = []
        for _ in range(20):
            seen.append(tuple(g["lr"] for g in optimizer.param_groups))
            optimizer.step()
            scheduler.step()
        if schedule == "constant":
            assert set(seen) == {(50.0, 1e-3)}
        else:
            assert len(set(seen)) > 10 and max(s[0] for s in seen) <= 50.0 + 1e-9, schedule
            assert all(abs(a / b - 50.0 / 1e-3) < 1e-3 for a, b in seen if b > 0), "groups scale alike"


def test_patience_stops_a_keep_best_training_once_no_epoch_beats_the_best():
    from dvolver.pruning import methods
    from search_spaces.backbones import build_backbone

    data = load("digits")

    def run(patience):
        torch.manual_seed(0)
        model = build_backbone("lenet300", data.input_shape, data.num_classes)
        cfg = TrainingSpec(epochs=40, batch_size=64, train_limit=256, patience=patience, schedule="constant",
                           keep_weights=False)
        return methods.prune(model, data, "edgepopup", 0.5, {}, cfg, 0, torch.device("cpu"))

    stopped, full = run(2), run(None)
    d = stopped.details
    assert d["stopped_early"] and stopped.result.epochs == d["best_epoch"] + 2 < 40
    assert d["steps"] == stopped.result.epochs * 4  # 256 images at batch 64
    assert not full.details["stopped_early"] and full.result.epochs == 40 and full.details["steps"] == 160
    # The same seed stops at the same epoch: patience keeps a run reproducible.
    assert run(2).details == d
