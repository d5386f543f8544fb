"""diamond_play: play games imagined by a diffusion world model (a re-implementation of DIAMOND)."""

__version__ = "0.1.0"


def load_agent(*args, **kwargs):  # noqa: ANN002, ANN003 - re-exported; see diamond_play.weights.loading
    from diamond_play.weights.loading import load_agent as _load_agent

    return _load_agent(*args, **kwargs)


load_agent.__doc__ = "Load weights (official .pt or a weights directory); see diamond_play.weights.load_agent."

def make_env(*args, **kwargs):  # noqa: ANN002, ANN003 - re-exported; see diamond_play.world_model_env
    from diamond_play.world_model_env import make_env as _make_env

    return _make_env(*args, **kwargs)


make_env.__doc__ = "A gymnasium world-model environment; see diamond_play.world_model_env.make_env."



def _register_gymnasium_envs() -> None:
    """`gymnasium.make("diamond_play/Breakout-v0")` for the Atari 100k games and `diamond_play/CSGO-v0`, with the
    default weights (shipped, then downloaded); keyword arguments go to `make_env`."""
    from gymnasium.envs.registration import register, registry

    from diamond_play.envs.atari import ATARI_100K_GAMES

    for game in (*ATARI_100K_GAMES, "CSGO"):
        env_id = f"diamond_play/{game}-v0"
        if env_id not in registry:
            register(env_id, entry_point="diamond_play.world_model_env:make_env", kwargs={"game": game},
                     disable_env_checker=False)


_register_gymnasium_envs()

__all__ = ["__version__", "load_agent", "make_env"]
