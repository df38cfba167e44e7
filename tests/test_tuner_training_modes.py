"""Gradient checkpointing, torch.compile and DDP give the same results as plain eager training."""

import os
import textwrap

import pytest
import torch
from peft import get_peft_model
from testing_utils import embedding, images, randomize_adapters, tiny_vit, torchrun

from petal_peft import QualityGatedLoraConfig

HERE = os.path.dirname(__file__)


def gated_vit():
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(lora_dropout=0.0))
    randomize_adapters(model)
    return model.train()


def adapter_grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def two_forwards_one_backward(model):
    x1, x2 = images(3, seed=1), images(3, seed=2)
    q1, q2 = torch.tensor([0.0, 0.2, 0.4]), torch.tensor([1.0, 0.9, 0.6])
    loss = embedding(model(pixel_values=x1, quality=q1)).pow(2).sum()
    loss = loss + embedding(model(pixel_values=x2, quality=q2)).sin().sum()
    loss.backward()
    return adapter_grads(model)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(use_reentrant):
    reference = two_forwards_one_backward(gated_vit())
    model = gated_vit()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    if use_reentrant:
        model.enable_input_require_grads()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    checkpointed = two_forwards_one_backward(model)
    assert checkpointed.keys() == reference.keys() and len(reference) > 0
    for name in reference:
        torch.testing.assert_close(checkpointed[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_torch_compile_has_no_graph_break_and_no_recompile_per_quality():
    torch._dynamo.reset()
    model = gated_vit()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    x = images(3)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(3):
            q = torch.rand(3, generator=torch.Generator().manual_seed(seed))
            out = embedding(compiled(pixel_values=x, quality=q))
            torch.testing.assert_close(out, embedding(model(pixel_values=x, quality=q)), rtol=1e-4, atol=1e-5)
            out.sum().backward()
    torch._dynamo.reset()


DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, {here!r})
    import petal_peft
    from peft import get_peft_model
    from testing_utils import tiny_vit, randomize_adapters, images, embedding
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = get_peft_model(tiny_vit(), petal_peft.QualityGatedLoraConfig(lora_dropout=0.0))
    randomize_adapters(model)
    ddp = torch.nn.parallel.DistributedDataParallel(model.train())
    x, q = images(4, seed=3), torch.tensor([0.0, 0.3, 0.7, 1.0])
    part = slice(rank * 2, rank * 2 + 2)
    embedding(ddp(pixel_values=x[part], quality=q[part])).pow(2).mean().backward()
    if rank == 0:
        grads = {{n: p.grad for n, p in model.named_parameters() if p.requires_grad}}
        torch.save(grads, {out!r})
    # both ranks leave together: a rank exiting while gloo still talks to it aborts the other one
    dist.barrier()
    dist.destroy_process_group()
    # skip interpreter teardown: gloo's threads can still be joinable when C++ statics are destroyed, and the
    # runtime then aborts ("terminate called without an active exception"), about one run in fifteen
    sys.stdout.flush()
    os._exit(0)
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_match_one_process_on_the_full_batch(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(here=HERE, out=str(tmp_path / "grads.pt")))
    torchrun(script, [], timeout=300, check=True)
    ddp_grads = torch.load(tmp_path / "grads.pt", weights_only=True)
    model = gated_vit()
    x, q = images(4, seed=3), torch.tensor([0.0, 0.3, 0.7, 1.0])
    embedding(model(pixel_values=x, quality=q)).pow(2).mean().backward()
    single = adapter_grads(model)
    assert ddp_grads.keys() == single.keys()
    for name in single:
        torch.testing.assert_close(ddp_grads[name], single[name], rtol=1e-4, atol=1e-6, msg=name)
