"""NT-ASGD: the trigger, the average against torch's ASGD, swapping, AMP scaling."""
import pytest
import torch

from fairseq_awd.nt_asgd import FairseqNTASGD, NTASGDConfig, copy_into, find_nt_asgd


def optimizer(params, lr=0.1, **kw):
    opt = FairseqNTASGD(NTASGDConfig(lr=[lr], **kw), params)
    opt.attached = True
    return opt


def test_switch_follows_the_nonmono_rule():
    opt = optimizer([torch.nn.Parameter(torch.zeros(1))], nonmono=2)
    losses = [10, 8, 7, 7.5, 7.2, 7.1, 9.0]
    switched_at = None
    for i, loss in enumerate(losses):
        opt.validated(loss, epoch=i + 1, num_updates=10 * i)
        if opt.info["averaging"] and switched_at is None:
            switched_at = i
    # 7.1 is the first loss worse than the best of all but the last 2 (min(10, 8, 7) = 7)
    assert switched_at == 5
    assert opt.info["val_losses"] == [10, 8, 7, 7.5, 7.2]  # no more history after the switch


def test_nonmono_zero_switches_at_the_first_validation_that_is_no_best():
    opt = optimizer([torch.nn.Parameter(torch.zeros(1))], nonmono=0)
    for i, loss in enumerate([5.0, 4.0, 4.5]):
        opt.validated(loss, epoch=i + 1, num_updates=i)
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


def test_found_through_fairseq_wrappers():
    opt = optimizer([torch.nn.Parameter(torch.zeros(1))])

    class Wrapper:
        fp32_optimizer = opt

    assert find_nt_asgd(Wrapper()) is opt
    assert find_nt_asgd(object()) is None


def test_unattached_optimizer_refuses_to_step():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = FairseqNTASGD(NTASGDConfig(lr=[0.1]), [p])
    p.grad = torch.ones(1)
    with pytest.raises(SystemExit, match="--task variable_bptt_lm"):
        opt.step()
