#!/usr/bin/env python3
"""TaLoS for one task with PyTorch, on one process or many (torchrun), CPU or GPUs.

    torchrun --nproc_per_node 2 examples/torch/talos_ddp.py base.h5 task.h5 --out out/task
    python3 examples/torch/talos_ddp.py base.h5 task.h5 --out out/task          # one process

BASE is a Locus checkpoint with an /architecture (`locus init`, `locus convert --architecture`),
TASK a Locus dataset (`locus data import`). Writes to --out:

    scores.h5   the --estimator scores of BASE on the training split        (= locus score)
    mask.h5     the TaLoS mask, --rounds calibration rounds to --density    (= locus mask)
    ft.h5       BASE fine-tuned sparsely through the mask                   (= locus finetune)
    tau.h5      the task vector ft − base                                   (= locus diff)

Every rank scores its share of the batches (rank, rank + world, ...); sums and sample counts are
summed over the ranks, so the files do not depend on the number of processes. Fine-tuning splits
every batch over the ranks and sums the gradients, so each step is the full batch's step. With CUDA
each rank uses its own GPU and NCCL; otherwise gloo on CPU.
"""
import argparse
import os
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "interop", "python"))
import locus_h5  # noqa: E402  (pip install ./interop/python makes the path unnecessary)
import locus_h5.torch as lt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--head", default="default")
    ap.add_argument("--split", default="train")
    ap.add_argument("--estimator", default="talos", choices=lt.ESTIMATORS)
    ap.add_argument("--draws", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64, help="scoring and training batch size (global)")
    ap.add_argument("--batches", type=int, default=None, help="score only the first N batches")
    ap.add_argument("--density", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args()

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world > 1:
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    os.makedirs(a.out, exist_ok=True)
    say = print if rank == 0 else (lambda *_args, **_kw: None)

    model = lt.load_model(a.base, device=device)
    x, y = lt.load_dataset(a.data, a.split, model.input_shape)
    scoring = dict(head=a.head, estimator=a.estimator, draws=a.draws, seed=a.seed, batch_size=a.batch_size)

    # 1. scores (rank 0 writes, after the all-reduce)
    scorer = lt.TaLoSScorer(model, **scoring).run(x, y, max_batches=a.batches)
    scorer.save(os.path.join(a.out, "scores.h5"), base=a.base)
    say(f"scores: {a.estimator} over {scorer.samples} samples on {world} process(es)")

    # 2. the TaLoS mask (every rank computes the same bits from the all-reduced scores)
    mask = lt.calibrate_mask(model, x, y, density=a.density, rounds=a.rounds, max_batches=a.batches, **scoring,
                             progress=lambda r, d, ones, n: say(f"round {r}/{a.rounds}: target {d:.4f}, {ones} of {n} trainable"))
    mask_path = os.path.join(a.out, "mask.h5")
    if rank == 0:
        lt.save_mask(mask_path, mask, base=a.base)
    if world > 1:
        dist.barrier()
    mask = lt.load_mask(mask_path, base=a.base, device=device)

    # 3. sparse fine-tuning of the body (the head stays frozen, as in locus finetune)
    head = set(model.head_parameter_names(a.head))
    body = [(n, p) for n, p in model.named_parameters() if n not in head]
    if a.optimizer == "sgd":
        opt = lt.SparseSGDM(body, mask, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay)
    else:
        opt = lt.MaskedAdamW(body, mask, lr=a.lr, weight_decay=a.weight_decay)
    n = x.shape[0]
    steps = -(-n // a.batch_size)
    model.train()
    for epoch in range(a.epochs):
        order = lt.epoch_order(range(n), epoch, a.seed)
        total = 0.0
        for s in range(steps):
            ids = order[s * a.batch_size:(s + 1) * a.batch_size]
            mine = ids[rank::world]
            opt.zero_grad(set_to_none=False)
            logits = model(x[mine].to(device), head=a.head)
            loss = F.cross_entropy(logits, y[mine].to(device), reduction="sum") / len(ids)   # this rank's share of the batch mean
            loss.backward()
            if world > 1:
                for _, p in body:
                    dist.all_reduce(p.grad)
                lt_loss = loss.detach().clone()
                dist.all_reduce(lt_loss)
                loss = lt_loss
            for g in opt.param_groups:
                g["lr"] = lt.learning_rate(epoch * steps + s, a.lr, a.epochs * steps)
            opt.step()
            total += float(loss.detach()) * len(ids)
        say(f"epoch {epoch + 1}/{a.epochs}: train loss {total / n:.4f}")

    # 4. the fine-tuned checkpoint and the task vector (rank 0)
    if rank == 0:
        ft = os.path.join(a.out, "ft.h5")
        lt.save_checkpoint(ft, model)
        s = lt.save_task_vector(os.path.join(a.out, "tau.h5"), ft, a.base,
                                attributes={"mask-fingerprint": locus_h5.mask_fingerprint(mask_path), "task-head": a.head})
        say(f"task vector: {s['nnz']} stored entries of {s['count']} in {s['tensors']} tensors; {opt.trainable_entries()} trainable")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
