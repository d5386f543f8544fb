"""Run under torchrun (2 CPU processes, gloo): a few DDP training steps of the real training core, then check that
every rank holds identical parameters. Writes the verdict to the file given as argv[1]."""

from __future__ import annotations

import hashlib
import json
import sys

import torch
import torch.distributed as dist
from helpers import tiny_agent

from diamond_play.data.episodes import Episode
from diamond_play.data.segments import SegmentSampler
from diamond_play.train.core import ModelTrainer, OptimConfig, init_distributed
from diamond_play.train.world_model import batches, denoiser_loss


def main() -> None:
    info = init_distributed("cpu")
    torch.manual_seed(info.rank)  # different local randomness per rank; DDP must still keep weights equal
    agent = tiny_agent("atari", seed=0)
    g = torch.Generator().manual_seed(100 + info.rank)
    frames = torch.randint(0, 256, (30, 64, 64, 3), generator=g, dtype=torch.uint8).numpy()
    ep = Episode(frames=frames, actions=torch.randint(0, 4, (30,), generator=g).numpy(),
                 rewards=torch.zeros(30).numpy(), terminations=torch.zeros(30, dtype=torch.bool).numpy(),
                 truncations=torch.zeros(30, dtype=torch.bool).numpy())
    sampler = SegmentSampler([ep], seq_length=6, batch_size=2, seed=info.rank)
    trainer = ModelTrainer("denoiser", agent.denoiser, OptimConfig(grad_acc_steps=2), torch.device("cpu"),
                           dist_info=info)
    before = [p.detach().clone() for p in agent.denoiser.parameters()]
    it = batches(sampler, torch.device("cpu"))
    for _ in range(3):
        trainer.step(it, denoiser_loss)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in agent.denoiser.parameters())).hexdigest()
    digests = [None] * info.world_size
    dist.all_gather_object(digests, digest)
    changed = any(not torch.equal(a, b) for a, b in zip(before, agent.denoiser.parameters(), strict=True))
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump({"digests": digests, "changed": changed, "world_size": info.world_size}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
