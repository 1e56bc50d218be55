"""NT-ASGD: the trigger, the average against torch's ASGD, swapping, AMP scaling,
and the model hooks that tie it to fairseq's validations under any task."""
import pytest
import torch
from fairseq.logging import metrics

from fairseq_awd.nt_asgd import FairseqNTASGD, NTASGDConfig, copy_into, follow_validation


def optimizer(params, lr=0.1, **kw):
    """An optimizer as fairseq-train builds it, its model hooks already seen."""
    opt = FairseqNTASGD(NTASGDConfig(lr=[lr], disable_validation=False, **kw), params)
    opt.model = lambda: None
    return opt


def test_switch_follows_the_nonmono_rule():
    opt = optimizer([torch.nn.Parameter(torch.zeros(1))], nonmono=2)
    losses = [10, 8, 7, 7.5, 7.2, 7.1, 9.0]
    switched_at = None
    for i, loss in enumerate(losses):
        opt.validated(loss)
        if opt.info["averaging"] and switched_at is None:
            switched_at = i
    # 7.1 is the first loss worse than the best of all but the last 2 (min(10, 8, 7) = 7)
    assert switched_at == 5
    assert opt.info["val_losses"] == [10, 8, 7, 7.5, 7.2]  # no more history after the switch


def test_nonmono_zero_switches_at_the_first_validation_that_is_no_best():
    opt = optimizer([torch.nn.Parameter(torch.zeros(1))], nonmono=0)
    for i, loss in enumerate([5.0, 4.0, 4.5]):
        opt.validated(loss)
        assert opt.info["averaging"] == (i == 2)


def test_bad_nonmono_is_one_line():
    with pytest.raises(SystemExit, match="--nonmono must be >= 0"):
        optimizer([torch.nn.Parameter(torch.zeros(1))], nonmono=-1)


def quadratic_steps(opt, p, lrs):
    for lr in lrs:
        opt.set_lr(lr) if hasattr(opt, "set_lr") else opt.param_groups[0].update(lr=lr)
        opt.zero_grad()
        (0.5 * (p * torch.arange(1.0, 4.0)).pow(2).sum()).backward()
        opt.step()


def test_average_matches_torch_asgd_as_the_reference_uses_it():
    lrs = [0.1, 0.2, 0.05, 0.1, 0.3, 0.1]  # the lr changes as variable BPTT does
    start = torch.tensor([1.0, -2.0, 0.5])
    ours = torch.nn.Parameter(start.clone())
    opt = optimizer([ours], weight_decay=0.01)
    opt.info["averaging"] = True
    quadratic_steps(opt, ours, lrs)
    ref = torch.nn.Parameter(start.clone())
    asgd = torch.optim.ASGD([ref], lr=lrs[0], t0=0, lambd=0.0, weight_decay=0.01)
    quadratic_steps(asgd, ref, lrs)
    assert torch.allclose(ours, ref, atol=1e-7)
    assert torch.allclose(opt.optimizer.state[ours]["ax"], asgd.state[ref]["ax"], atol=1e-7)


def test_average_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = optimizer([p], lr=0.5)
    opt.info["averaging"] = True
    iterates = []
    for _ in range(4):
        opt.zero_grad()
        (0.5 * p.pow(2)).sum().backward()  # grad = p: each step halves p
        opt.step()
        iterates.append(p.item())
    assert iterates == [0.5, 0.25, 0.125, 0.0625]
    # the mean of all iterates but the first, as torch's ASGD(t0=0) averages
    assert opt.optimizer.state[p]["ax"].item() == pytest.approx((0.25 + 0.125 + 0.0625) / 3)


def test_sgd_before_the_switch():
    p = torch.nn.Parameter(torch.tensor([2.0]))
    opt = optimizer([p], lr=0.1, weight_decay=0.5)
    opt.zero_grad()
    (3 * p).sum().backward()
    opt.step()
    assert p.item() == pytest.approx(2.0 - 0.1 * (3 + 0.5 * 2.0))
    assert "ax" not in opt.optimizer.state[p]


def test_swap_in_and_out_without_leaks():
    model = torch.nn.Linear(3, 2)
    opt = optimizer(list(model.parameters()))
    opt.info["averaging"] = True
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
    raw = [p.detach().clone() for p in model.parameters()]
    ax = [opt.optimizer.state[p]["ax"].clone() for p in model.parameters()]
    opt.swap_in_average(model.parameters())
    opt.swap_in_average(model.parameters())  # twice is once
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), ax))
    assert opt.swapped
    opt.swap_out_average(model.parameters())
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    assert all(torch.equal(opt.optimizer.state[p]["ax"], a) for p, a in zip(model.parameters(), ax))
    assert not opt.swapped


def test_a_parameter_without_gradient_keeps_its_weights_through_a_swap():
    used, unused = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.full((2,), 5.0))
    opt = optimizer([used, unused])
    opt.info["averaging"] = True
    for _ in range(3):
        opt.zero_grad()
        used.sum().backward()
        opt.step()
    opt.swap_in_average([used, unused])
    assert unused.tolist() == [5.0, 5.0] and torch.equal(used, opt.optimizer.state[used]["ax"])
    opt.swap_out_average([used, unused])
    assert unused.tolist() == [5.0, 5.0] and used.tolist() == pytest.approx([0.7, 0.7])


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("max_norm", [0.25, 0.0, 1e6])
def test_clip_is_fairseqs_with_one_norm_kernel(max_norm, device):
    """fairseq's clip_grad_norm_ without apex, bit for bit on a CPU (the norm of the
    per-tensor norms, aggregated, then grads times min(1, max_norm / (norm + 1e-6))),
    from one foreach norm over the tensors instead of one norm per tensor, the norm
    handed back on the host (the trainer reads it there at once). Written out here:
    fairseq's own puts the norm on cuda:0 whenever CUDA is present, CPU tensors too."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, device=device))
              for s in [(40, 30), (40,), (7, 30), (5,)]]
    grads = [torch.randn_like(p) * 3 for p in params]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    expected = torch.stack([g.norm() for g in grads]).norm() * 2
    coef = (max_norm / (expected + 1e-6)).clamp(max=1) if max_norm > 0 else 1
    with torch.profiler.profile() as prof:
        norm = optimizer(params).clip_grad_norm(max_norm, lambda n: n * 2)
    # a GPU's foreach norm may sum in another order than its per-tensor norms
    same = torch.equal if device == "cpu" else lambda a, b: torch.allclose(a, b, rtol=1e-6)
    assert norm.device.type == "cpu" and same(norm, expected.cpu())
    assert all(p.grad.device == g.device and same(p.grad, g * coef)
               for p, g in zip(params, grads))
    assert max_norm != 0.25 or not torch.equal(params[0].grad, grads[0])  # it did clip
    names = [e.name for e in prof.events()]
    assert names.count("aten::_foreach_norm") == 1, names


def test_fp16_master_copies_reach_the_model():
    model = [torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float16)),
             torch.nn.Parameter(torch.zeros(3, dtype=torch.float16))]
    flat = [torch.arange(7.0)]
    copy_into(model, flat)
    assert model[0].tolist() == [[0, 1], [2, 3]] and model[1].tolist() == [4, 5, 6]
    copy_into(model, [torch.ones(2, 2), torch.full((3,), 2.0)])
    assert model[1].tolist() == [2, 2, 2]


def test_amp_grad_scaler_unscales_once():
    """fairseq's AMPOptimizer: unscale_ through the torch optimizer in clip_grad_norm,
    then GradScaler.step on the fairseq optimizer."""
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = optimizer([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((p * torch.tensor([3.0, 4.0])).sum()).backward()
    scaler.unscale_(opt.optimizer)
    scaler.step(opt)
    assert torch.allclose(p, torch.tensor([1.0 - 0.3, 2.0 - 0.4]))
    # an overflow skips the step
    scaler.update()
    opt.zero_grad()
    scaler.scale((p * torch.tensor([float("inf"), 1.0])).sum()).backward()
    scaler.unscale_(opt.optimizer)
    scaler.step(opt)
    assert torch.allclose(p, torch.tensor([0.7, 1.6]))


def fairseq_validation(model, loss):
    """What fairseq-train's validate() does around the model: a new root aggregator
    per subset, trainer.valid_step under the "valid" one, the criterion's loss."""
    with metrics.aggregate(new_root=True):
        with metrics.aggregate("valid"):
            model.eval()
            with torch.no_grad():
                model(torch.ones(1, 3))
            metrics.log_scalar("loss", loss, 1)


def train_steps(model, opt, n):
    model.train()
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()


def test_model_hooks_feed_the_trigger_and_swap_the_average_under_any_task():
    model = follow_validation(torch.nn.Linear(3, 2))
    opt = FairseqNTASGD(NTASGDConfig(lr=[0.1], nonmono=0, disable_validation=False),
                        list(model.parameters()))
    train_steps(model, opt, 2)  # the first training forward ties the two
    fairseq_validation(model, 5.0)
    model.state_dict()  # fairseq's checkpoint after the validation reads its loss
    assert opt.info["val_losses"] == [5.0] and not opt.info["averaging"]
    train_steps(model, opt, 1)
    fairseq_validation(model, 6.0)
    train_steps(model, opt, 3)  # without a checkpoint, the next update reads it
    assert opt.info["averaging"]
    raw = [p.detach().clone() for p in model.parameters()]
    ax = [opt.optimizer.state[p]["ax"].clone() for p in model.parameters()]
    # validation and checkpoints see the average, training the raw weights
    fairseq_validation(model, 4.0)
    assert all(torch.equal(p, a) for p, a in zip(model.parameters(), ax))
    saved = model.state_dict()
    assert all(torch.equal(saved[k], a) for k, a in zip(["weight", "bias"], ax))
    model.train()
    model(torch.ones(1, 3))
    assert all(torch.equal(p, r) for p, r in zip(model.parameters(), raw))
    assert opt.info["val_losses"] == [5.0]  # no history after the switch


def test_only_the_first_subset_of_a_validation_counts():
    model = follow_validation(torch.nn.Linear(3, 2))
    opt = FairseqNTASGD(NTASGDConfig(lr=[0.1], disable_validation=False),
                        list(model.parameters()))
    train_steps(model, opt, 1)
    fairseq_validation(model, 5.0)
    fairseq_validation(model, 1.0)  # a second valid subset
    model.state_dict()
    assert opt.info["val_losses"] == [5.0]
    model.eval()
    model(torch.ones(1, 3))  # an eval forward outside fairseq's validation reads nothing
    train_steps(model, opt, 1)
    assert opt.info["val_losses"] == [5.0]


def test_an_optimizer_no_model_reports_to_refuses_to_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = FairseqNTASGD(NTASGDConfig(lr=[0.1], disable_validation=False), [p])
    p.grad = torch.ones(1)
    with pytest.raises(SystemExit, match="follows validation through the model"):
        opt.step()


def test_without_validation_is_one_line():
    with pytest.raises(SystemExit, match="drop --disable-validation"):
        FairseqNTASGD(NTASGDConfig(lr=[0.1], disable_validation=True),
                      [torch.nn.Parameter(torch.zeros(1))])
