"""Reward/termination model: a conditioned CNN encoder over (o_t, o_t+1), an LSTM over time, a 5-logit head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diamond_play.config import RewEndModelConfig
from diamond_play.models.blocks import Downsample, NormConditioned, ResBlocks, conv3x3, init_lstm

NUM_REWARD_CLASSES = 3  # sign(r) + 1
NUM_END_CLASSES = 2

HiddenState = tuple[Tensor, Tensor]


class RewEndEncoder(NormConditioned):
    """conv_in, then one ResBlocks per level (downsampling before levels 1..), then two attention ResBlocks."""

    def __init__(self, in_channels: int, cond_channels: int, depths: list[int], channels: list[int],
                 attn_depths: list[bool]) -> None:
        super().__init__()
        self.conv_in = conv3x3(in_channels, channels[0])
        blocks = []
        for i, n in enumerate(depths):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            blocks.append(ResBlocks([c1] + [c2] * (n - 1), [c2] * n, cond_channels, attn_depths[i]))
        blocks.append(ResBlocks([channels[-1]] * 2, [channels[-1]] * 2, cond_channels, attn=True))
        self.blocks = nn.ModuleList(blocks)
        self.downsamples = nn.ModuleList([nn.Identity()] + [Downsample(c) for c in channels[:-1]] + [nn.Identity()])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.conv_in(x)
        cond = self.norm_cond(cond)
        for block, down in zip(self.blocks, self.downsamples, strict=True):
            x, _ = block(down(x), cond)
        return x


class RewEndModel(nn.Module):
    def __init__(self, cfg: RewEndModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = RewEndEncoder(2 * cfg.img_channels, cfg.cond_channels, cfg.depths, cfg.channels,
                                     cfg.attn_depths)
        self.act_emb = nn.Embedding(cfg.num_actions, cfg.cond_channels)
        feature_size = cfg.img_size // 2 ** (len(cfg.depths) - 1)
        self.lstm = nn.LSTM(cfg.channels[-1] * feature_size**2, cfg.lstm_dim, batch_first=True)
        self.head = nn.Sequential(
            nn.Linear(cfg.lstm_dim, cfg.lstm_dim),
            nn.SiLU(),
            nn.Linear(cfg.lstm_dim, NUM_REWARD_CLASSES + NUM_END_CLASSES, bias=False),
        )
        init_lstm(self.lstm)

    def predict_rew_end(self, obs: Tensor, act: Tensor, next_obs: Tensor,
                        hx_cx: HiddenState | None = None) -> tuple[Tensor, Tensor, HiddenState]:
        """obs/next_obs (B, T, C, H, W) in [-1, 1], act (B, T) -> reward logits (B, T, 3) for clipped reward
        -1/0/+1, end logits (B, T, 2), and the LSTM state (h, c), each (1, B, lstm_dim)."""
        x, hx_cx = self.lstm(self.encode(obs, act, next_obs), hx_cx)
        return *self.rew_end_logits(x), hx_cx

    def encode(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """(B, T) transitions -> encoder features (B, T, F), the LSTM's input."""
        b, t, c, h, w = obs.shape
        x = torch.cat((obs.reshape(b * t, c, h, w), next_obs.reshape(b * t, c, h, w)), dim=1)
        return self.encoder(x, self.act_emb(act.reshape(b * t))).reshape(b, t, -1)

    def rew_end_logits(self, lstm_out: Tensor) -> tuple[Tensor, Tensor]:
        """LSTM outputs (B, T, lstm_dim) -> reward logits (B, T, 3), end logits (B, T, 2)."""
        logits = self.head(lstm_out)
        return logits[:, :, :NUM_REWARD_CLASSES], logits[:, :, NUM_REWARD_CLASSES:]

    def forward(self, obs: Tensor, act: Tensor, rew: Tensor, end: Tensor,
                mask_padding: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Training loss over a window (B, T): transitions t -> t+1 for t < T-1 where step t is real.

        CE(reward class sign(r)+1) + CE(end). The frame after a terminal step is the episode's final frame (the
        sampler puts it in the first padded slot).
        """
        rew_logits, end_logits, _ = self.predict_rew_end(obs[:, :-1], act[:, :-1], obs[:, 1:])
        # Mean over real steps, written without indexing by the mask so no host sync breaks a compiled graph.
        mask = mask_padding[:, :-1].float()
        count = mask.sum().clamp(min=1)
        target_rew = (rew[:, :-1].sign() + 1).long()
        target_end = end[:, :-1].long()
        loss_rew = (F.cross_entropy(rew_logits.flatten(0, 1).float(), target_rew.flatten(), reduction="none")
                    * mask.flatten()).sum() / count
        loss_end = (F.cross_entropy(end_logits.flatten(0, 1).float(), target_end.flatten(), reduction="none")
                    * mask.flatten()).sum() / count
        loss = loss_rew + loss_end
        return loss, {"loss_rew_end": loss.detach(), "loss_rew": loss_rew.detach(), "loss_end": loss_end.detach()}
