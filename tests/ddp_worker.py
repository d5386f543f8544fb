"""Run under torchrun (2 CPU processes, gloo): a few DDP training steps of the real training core (the denoiser, or
with argv[2] == "actor_critic" the actor-critic in imagination, with "csgo_upsampler" CS:GO's upsampler), then
check that every rank holds identical parameters. Writes the verdict to the file given as argv[1]."""

from __future__ import annotations

import hashlib
import json
import sys

import torch
import torch.distributed as dist
from helpers import tiny_agent

from diamond_play.config import ATARI_SAMPLER
from diamond_play.data.episodes import Episode
from diamond_play.data.segments import SegmentSampler
from diamond_play.train.atari import AtariTrainConfig, forever
from diamond_play.train.core import ModelTrainer, OptimConfig, finish_distributed, init_distributed
from diamond_play.train.rl import ImaginedEnvs, RolloutRunner, imagination_loss_fn, imagination_world_model
from diamond_play.train.world_model import batches, denoiser_loss, upsampler_loss


def main() -> None:
    info = init_distributed("cpu")
    torch.manual_seed(info.rank)  # different local randomness per rank; DDP must still keep weights equal
    agent = tiny_agent("atari", seed=0)
    g = torch.Generator().manual_seed(100 + info.rank)
    frames = torch.randint(0, 256, (30, 64, 64, 3), generator=g, dtype=torch.uint8).numpy()
    ep = Episode(frames=frames, actions=torch.randint(0, 4, (30,), generator=g).numpy(),
                 rewards=torch.zeros(30).numpy(), terminations=torch.zeros(30, dtype=torch.bool).numpy(),
                 truncations=torch.zeros(30, dtype=torch.bool).numpy())
    cpu = torch.device("cpu")
    if len(sys.argv) > 2 and sys.argv[2] == "actor_critic":
        # The actor-critic learns in imagination: each rank rolls out its own imagined episodes.
        starts = SegmentSampler([ep], seq_length=4, batch_size=2, seed=info.rank)
        envs = ImaginedEnvs(imagination_world_model(agent, 2, ATARI_SAMPLER, cpu), starts, horizon=3)
        runner = RolloutRunner(envs, agent.actor_critic.cfg.lstm_dim)
        model = agent.actor_critic
        trainer = ModelTrainer("actor_critic", model, OptimConfig(), cpu, dist_info=info)
        cfg = AtariTrainConfig(imagination_horizon=3, backup_every=4)
        it, loss = forever(), imagination_loss_fn(runner, cfg.backup_every, cfg.rl)
    elif len(sys.argv) > 2 and sys.argv[2] == "csgo_upsampler":
        # CS:GO's upsampler on multi-hot data with full-res frames, accumulating 2 micro-batches per step.
        from bench_data import csgo_episode

        agent = tiny_agent("csgo", seed=0)
        model = agent.upsampler
        trainer = ModelTrainer("upsampler", model, OptimConfig(grad_acc_steps=2), cpu, dist_info=info)
        it = batches(SegmentSampler([csgo_episode(g)], seq_length=3, batch_size=1, seed=info.rank), cpu)
        loss = upsampler_loss
    else:
        model = agent.denoiser
        trainer = ModelTrainer("denoiser", model, OptimConfig(grad_acc_steps=2), cpu, dist_info=info)
        it, loss = batches(SegmentSampler([ep], seq_length=6, batch_size=2, seed=info.rank), cpu), denoiser_loss
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        trainer.step(it, loss)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    digests = [None] * info.world_size
    dist.all_gather_object(digests, digest)
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if info.is_main:
        with open(sys.argv[1], "w") as f:
            json.dump({"digests": digests, "changed": changed, "world_size": info.world_size}, f)
    finish_distributed(info)


if __name__ == "__main__":
    main()
