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
        # see fuse_lstm_step: non-persistent buffers, outside the state dict but seen by `.to()` and tracing
        self.register_buffer("lstm_step_weight", None, persistent=False)
        self.register_buffer("lstm_step_bias", None, persistent=False)

    def predict_rew_end(self, obs: Tensor, act: Tensor, next_obs: Tensor,
                        hx_cx: HiddenState | None = None) -> tuple[Tensor, Tensor, HiddenState]:
        """obs/next_obs (B, T, C, H, W) in [-1, 1], act (B, T) -> reward logits (B, T, 3) for clipped reward
        -1/0/+1, end logits (B, T, 2), and the LSTM state (h, c), each (1, B, lstm_dim)."""
        x, hx_cx = self.lstm(self.encode(obs, act, next_obs), hx_cx)
        return *self.rew_end_logits(x), hx_cx

    def fuse_lstm_step(self, dtype: torch.dtype = torch.float32) -> None:
        """Inference with frozen weights: keep the LSTM's input and hidden weights as one (4H, F + H) matrix in
        `dtype` (bf16 in bf16 modes: the 5M-weight LSTM is most of the per-frame memory traffic) for
        `predict_rew_end_one_step`. Non-persistent buffers, so state dicts are unchanged."""
        lstm = self.lstm
        self.lstm_step_weight = torch.cat((lstm.weight_ih_l0, lstm.weight_hh_l0), dim=1).detach().to(dtype)
        self.lstm_step_bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().float()

    def predict_rew_end_one_step(self, obs: Tensor, act: Tensor, next_obs: Tensor,
                                 hx_cx: HiddenState | None = None) -> tuple[Tensor, Tensor, HiddenState]:
        """`predict_rew_end` for one time step (T = 1) at inference, the play engine's per-frame call (after
        `fuse_lstm_step`): the LSTM as one matmul over [input, h] and fp32 gate maths, several times faster than
        the sequence kernel for one step; same maths up to float rounding."""
        if obs.shape[1] != 1:
            raise ValueError(f"predict_rew_end_one_step takes one time step, got {obs.shape[1]}")
        weight, bias = self.lstm_step_weight, self.lstm_step_bias
        if weight is None or bias is None:
            raise RuntimeError("call fuse_lstm_step() before predict_rew_end_one_step()")
        x = self.encode(obs, act, next_obs)[:, 0]
        if hx_cx is None:
            zeros = x.new_zeros(1, len(x), self.lstm.hidden_size, dtype=torch.float32)
            hx_cx = (zeros, zeros)
        hx, cx = hx_cx[0][0], hx_cx[1][0]
        gates = F.linear(torch.cat((x.to(weight.dtype), hx.to(weight.dtype)), dim=1), weight).float() + bias
        in_gate, forget_gate, cell_gate, out_gate = gates.chunk(4, dim=1)  # nn.LSTM's gate order
        cx = forget_gate.sigmoid() * cx.float() + in_gate.sigmoid() * cell_gate.tanh()
        hx = out_gate.sigmoid() * cx.tanh()
        return *self.rew_end_logits(hx[:, None]), (hx[None], cx[None])

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
