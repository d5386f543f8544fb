"""Actor-critic: a small residual CNN, an LSTM cell, and policy/value heads."""

from __future__ import annotations

from torch import Tensor, nn

from diamond_play.config import ActorCriticConfig
from diamond_play.models.blocks import SmallResBlock, init_lstm

HiddenState = tuple[Tensor, Tensor]


class ActorCriticEncoder(nn.Module):
    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        assert len(cfg.channels) == len(cfg.down)
        layers: list[nn.Module] = [nn.Conv2d(cfg.img_channels, cfg.channels[0], kernel_size=3, stride=1, padding=1)]
        in_channels = cfg.channels[0]
        for out_channels, down in zip(cfg.channels, cfg.down, strict=True):
            layers.append(SmallResBlock(in_channels, out_channels))
            if down:
                layers.append(nn.MaxPool2d(2))
            in_channels = out_channels
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class ActorCritic(nn.Module):
    def __init__(self, cfg: ActorCriticConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ActorCriticEncoder(cfg)
        feature_size = cfg.img_size // 2 ** sum(cfg.down)
        self.lstm = nn.LSTMCell(cfg.channels[-1] * feature_size**2, cfg.lstm_dim)
        self.critic_linear = nn.Linear(cfg.lstm_dim, 1)
        self.actor_linear = nn.Linear(cfg.lstm_dim, cfg.num_actions)
        for head in (self.critic_linear, self.actor_linear):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        init_lstm(self.lstm)

    def predict_act_value(self, obs: Tensor, hx_cx: HiddenState | None) -> tuple[Tensor, Tensor, HiddenState]:
        """obs (B, C, H, W) in [-1, 1] -> action logits (B, A), value (B,), new LSTM state (h, c)."""
        x = self.encoder(obs).flatten(start_dim=1)
        hx, cx = self.lstm(x, hx_cx)
        return self.actor_linear(hx), self.critic_linear(hx).squeeze(1), (hx, cx)

    def forward(self, obs: Tensor, hx_cx: HiddenState | None) -> tuple[Tensor, Tensor, HiddenState]:
        # forward is what DistributedDataParallel wraps, so training calls the model rather than the method.
        return self.predict_act_value(obs, hx_cx)
