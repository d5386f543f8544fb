"""The play app with real pygame (dummy video driver), real ALE and tiny random-weight engines."""

from __future__ import annotations

import cv2
import numpy as np
import pygame
import pytest

import diamond_play
from diamond_play.cli import main
from diamond_play.data.episodes import Dataset
from diamond_play.envs import csgo
from diamond_play.errors import UserError
from diamond_play.play.app import PlayOptions, Renderer, WindowApp
from diamond_play.play.controls import AtariControls, CSGOControls
from diamond_play.play.session import PlaySession

BREAKOUT = ["NOOP", "FIRE", "RIGHT", "LEFT"]


def key(kind: int, k: int) -> pygame.event.Event:
    return pygame.event.Event(kind, key=k, mod=0, unicode="", scancode=0)


def test_atari_keys_map_to_the_games_actions():
    c = AtariControls(BREAKOUT)
    assert c.action() == 0
    c.handle_event(key(pygame.KEYDOWN, pygame.K_d))
    assert BREAKOUT[c.action()] == "RIGHT"
    c.handle_event(key(pygame.KEYDOWN, pygame.K_SPACE))
    assert BREAKOUT[c.action()] in ("RIGHT", "FIRE")  # Breakout has no RIGHTFIRE: a supported subset is used
    c.handle_event(key(pygame.KEYUP, pygame.K_d))
    assert BREAKOUT[c.action()] == "FIRE"
    full = ["NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT", "DOWNLEFT", "UPFIRE",
            "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE", "DOWNRIGHTFIRE", "DOWNLEFTFIRE"]
    c = AtariControls(full)
    assert full[c.action_for({"UP", "RIGHT", "FIRE"})] == "UPRIGHTFIRE"
    assert full[c.action_for({"UP", "DOWN", "LEFT"})] == "LEFT"


def test_csgo_keys_mouse_and_forbidden_pairs():
    c = CSGOControls(mouse_multiplier=10)
    for k in (pygame.K_w, pygame.K_s, pygame.K_2, pygame.K_1, pygame.K_LSHIFT):
        c.handle_event(key(pygame.KEYDOWN, k))
    c.handle_event(pygame.event.Event(pygame.MOUSEBUTTONDOWN, button=1, pos=(0, 0)))
    c.handle_event(pygame.event.Event(pygame.MOUSEMOTION, rel=(3, 1), pos=(0, 0), buttons=(0, 0, 0)))
    c.handle_event(pygame.event.Event(pygame.MOUSEMOTION, rel=(-7, 2), pos=(0, 0), buttons=(0, 0, 0)))
    action = csgo.decode_action(c.action())
    assert action.keys == ("w", "shift", "2")  # s loses to the earlier w, 1 to the earlier 2
    assert action.l_click and not action.r_click
    assert (action.mouse_x, action.mouse_y) == (-60, 20)  # the last motion x10, snapped to the bins
    assert csgo.decode_action(c.action()).mouse_x == 0  # motion is consumed by the frame
    c.handle_event(key(pygame.KEYDOWN, pygame.K_RIGHT))
    c.handle_event(key(pygame.KEYDOWN, pygame.K_LEFT))
    assert csgo.decode_action(c.action()).mouse_x == 60
    vec = c.action()
    assert vec.shape == (51,) and vec[13:36].sum() == 1 and vec[36:].sum() == 1


def test_csgo_action_encoding_round_trip():
    a = csgo.CSGOAction(keys=("a", "space", "r"), r_click=True, mouse_x=-300, mouse_y=100)
    assert csgo.decode_action(csgo.encode_action(a)) == a
    assert csgo.nearest_bin(12345, csgo.MOUSE_X_BINS) == 1000 and csgo.nearest_bin(7, csgo.MOUSE_Y_BINS) == 4


def run_ticks(app: WindowApp, frames: int, max_ticks: int = 2000) -> None:
    start = len(app.state.stats.latencies)
    for _ in range(max_ticks):
        app.tick()
        if len(app.state.stats.latencies) >= start + frames:
            app.wait_idle()
            app.tick()
            return
    raise AssertionError("the app did not produce frames")


def test_window_keys_reach_the_engine_and_pause_step_reset(atari_weights):
    agent = diamond_play.load_agent(atari_weights)
    session = PlaySession(agent, seed=0, horizon=1000)
    app = WindowApp(session, PlayOptions(fps=1000))
    try:
        first = session.frame.copy()
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_a))
        run_ticks(app, 3)
        assert BREAKOUT[int(app.state.last.action)] == "LEFT"
        pygame.event.post(key(pygame.KEYUP, pygame.K_a))
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_SPACE))
        run_ticks(app, 2)
        assert BREAKOUT[int(app.state.last.action)] == "FIRE"
        assert not np.array_equal(session.frame, first)  # frames change over time

        pygame.event.post(key(pygame.KEYDOWN, pygame.K_PERIOD))
        app.tick()
        app.wait_idle()
        app.tick()
        assert app.state.paused
        steps = session.engine.steps
        for _ in range(20):
            app.tick()
        assert session.engine.steps == steps  # paused: nothing happens
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_e))
        for _ in range(5):
            app.tick()
            app.wait_idle()
        assert session.engine.steps == steps + 1  # e: exactly one step
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_RETURN))
        app.tick()
        app.tick()
        assert session.engine.steps == 0  # Enter: re-seeded from the real game

        pygame.event.post(key(pygame.KEYDOWN, pygame.K_RIGHT))
        app.tick()
        assert app.state.view == "side by side"
        assert app.screen.get_size() == (2 * 64 * 8 + 8, 64 * 8 + Renderer.HUD_PANEL)  # HUD strip below
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_UP))
        app.tick()
        assert session.engine.horizon == 1010
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_m))
        app.tick()
        assert app.state.policy
    finally:
        app.close()


def test_headless_video_has_the_right_number_of_frames(atari_weights, tmp_path, capsys):
    video = tmp_path / "out.mp4"
    code = main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "12", "--actions",
                 "random", "--record", str(video), "--seed", "1"])
    assert code == 0
    out = capsys.readouterr().out
    assert "12 frames" in out and "predicted reward" in out  # the engine has a reward/termination model
    cap = cv2.VideoCapture(str(video))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == 12
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    assert size == (512, 512 + Renderer.HUD_PANEL)


def test_recorded_dataset_matches_what_was_played(atari_weights, tmp_path, capsys):
    actions = tmp_path / "actions.txt"
    actions.write_text("\n".join(str(i % 4) for i in range(10)))
    out = tmp_path / "ds"
    code = main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "10", "--actions",
                 str(actions), "--record-dataset", str(out), "--seed", "3", "--horizon", "1000", "--mode",
                 "eager-fp32"])
    assert code == 0, capsys.readouterr().err
    ds = Dataset(out)
    episodes = [ds[i] for i in range(len(ds))]
    assert sum(len(e) for e in episodes) == 10
    played = np.concatenate([e.actions for e in episodes])
    assert played.tolist() == [i % 4 for i in range(10)]
    assert ds.info.game == "Breakout" and episodes[0].frames.shape[1:] == (64, 64, 3)

    # Replaying the same seed gives the same imagined frames: frames[t+1] is the frame shown after action t.
    agent = diamond_play.load_agent(atari_weights)
    session = PlaySession(agent, seed=3, horizon=1000)
    shown, episode_return = [], 0.0
    for a in range(10):
        outcome = session.step(a % 4)
        shown.append((outcome.frame, outcome.reset))
        episode_return += outcome.reward
        assert outcome.episode_return == episode_return  # what the HUD shows as "return"
        if outcome.reset:
            episode_return = 0.0
    first = episodes[0]
    for t in range(len(first) - 1):
        assert np.array_equal(first.frames[t + 1], shown[t][0])


def test_csgo_headless_from_spawn(csgo_weights, tmp_path, capsys):
    shot = tmp_path / "csgo.png"
    code = main(["csgo", "--weights", str(csgo_weights), "--headless", "--frames", "3", "--actions", "random",
                 "--fast", "--spawn", "1", "--screenshot", str(shot)])
    assert code == 0, capsys.readouterr().err
    img = cv2.imread(str(shot))
    assert img.shape == (300 + Renderer.HUD_PANEL, 560, 3) and img.std() > 1


def test_csgo_window_mouse_grab_and_double_escape(csgo_weights, tmp_path):
    agent = diamond_play.load_agent(csgo_weights)
    session = PlaySession(agent, seed=0, spawn=0, record_dataset=str(tmp_path / "ds"))
    app = WindowApp(session, PlayOptions(fps=1000))
    try:
        assert app.grabbed
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_w))
        pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, rel=(20, 0), pos=(0, 0), buttons=(0, 0, 0)))
        run_ticks(app, 1)
        sent = csgo.decode_action(session.recorder.actions[0])  # the first action the engine received
        assert sent.keys == ("w",) and sent.mouse_x == 200
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))
        app.tick()
        assert not app.grabbed and not app.state.quit
        pygame.event.post(key(pygame.KEYDOWN, pygame.K_ESCAPE))
        app.tick()
        assert app.state.quit
    finally:
        app.wait_idle()
        app.close()


@pytest.mark.parametrize("args,fragment", [
    (["atari", "Breakot"], "unknown Atari game"),
    (["atari", "Breakout", "--weights", "/nonexistent/w"], "not found"),
    (["atari", "Breakout", "--headless", "--frames", "2"], "--actions"),
    (["csgo", "--spawn", "7", "--headless", "--frames", "1", "--actions", "random"], "out of range"),
])
def test_play_errors_are_one_line(atari_weights, csgo_weights, capsys, args, fragment):
    if "--weights" not in args:
        args = args + ["--weights", str(csgo_weights if args[0] == "csgo" else atari_weights)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and fragment in err


def test_missing_default_weights_say_how_to_get_them(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIAMOND_PLAY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DIAMOND_PLAY_SHIPPED_WEIGHTS", str(tmp_path / "none"))
    assert main(["atari", "Pong", "--headless", "--frames", "1", "--actions", "random"]) == 2
    assert "diamond-play download atari Pong" in capsys.readouterr().err


def test_world_model_env_in_a_compiled_mode_compiles_first_and_replays_a_seed_exactly(atari_weights):
    env = diamond_play.make_env("Breakout", weights=atari_weights, mode="compiled-bf16-cl")
    assert str(env.engine.compile_status).startswith("compiled in"), env.engine.compile_status

    def episode() -> list[np.ndarray]:
        obs, _ = env.reset(seed=7)
        return [obs] + [env.step(a)[0] for a in (1, 2, 3)]

    first, again = episode(), episode()
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    env.close()
    with pytest.raises(UserError, match="unknown mode"):
        diamond_play.make_env("Breakout", weights=atari_weights, mode="warp-speed")


def test_world_model_env_passes_gymnasium_checker(atari_weights, csgo_weights):
    from gymnasium.utils.env_checker import check_env

    env = diamond_play.make_env("Breakout", weights=atari_weights, render_mode="rgb_array")
    check_env(env, skip_render_check=False)
    obs, _ = env.reset(seed=5)
    obs2, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == obs2.shape == (64, 64, 3) and isinstance(reward, float)
    env.close()
    env = diamond_play.make_env("csgo", weights=csgo_weights)
    check_env(env, skip_render_check=True)
    assert env.reset(seed=1)[0].shape == (150, 280, 3)


@pytest.mark.slow
def test_headless_soak_keeps_memory_flat(atari_weights):
    import resource

    agent = diamond_play.load_agent(atari_weights)
    session = PlaySession(agent, seed=0, horizon=200)
    rng = np.random.default_rng(0)

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20

    for _ in range(300):
        session.step(int(rng.integers(4)))
    samples = []  # one every 100 frames: a single reading swings by +-12 MB (allocator caching), a leak does not
    for i in range(3000):
        session.step(int(rng.integers(4)))
        if i % 100 == 99:
            samples.append(rss_mb())
    first, last = float(np.median(samples[:10])), float(np.median(samples[-10:]))
    assert last - first < 30, f"memory grew from {first:.0f} MB to {last:.0f} MB over 2,000 frames"
    session.close()


def test_the_fast_preset_takes_one_euler_step_per_frame_and_keeps_the_rest(atari_weights, csgo_weights):
    from diamond_play.bench import synthetic_start
    from diamond_play.engine import WorldModelEngine
    from diamond_play.games import game_of

    agent = diamond_play.load_agent(atari_weights)
    own, game = agent.config.sampling, game_of(agent.config)
    assert game.sampling_presets == ("quality", "fast") and game.sampling("quality", own) is None
    fast = game.sampling("fast", own)
    assert fast.dynamics.num_steps_denoising == 1 and own.dynamics.num_steps_denoising == 3
    assert fast.dynamics.sigma_max == own.dynamics.sigma_max and fast.dynamics.rho == own.dynamics.rho
    with pytest.raises(UserError, match="unknown sampler preset"):
        game.sampling("fastest", own)
    calls = []
    agent.denoiser.inner_model.register_forward_hook(lambda *_: calls.append(1))
    for sampling, expected in ((None, 3), (fast, 1)):
        engine = WorldModelEngine(agent, sampling=sampling, seed=0)
        engine.reset(synthetic_start(engine))
        calls.clear()
        engine.step(0)
        assert len(calls) == expected
    csgo_agent = diamond_play.load_agent(csgo_weights)  # CS:GO keeps the official presets (1 + 1 steps)
    csgo_fast = game_of(csgo_agent.config).sampling("fast", csgo_agent.config.sampling)
    assert (csgo_fast.dynamics.num_steps_denoising, csgo_fast.upsampler.num_steps_denoising) == (1, 1)


def test_atari_fast_headless(atari_weights, capsys):
    assert main(["atari", "Breakout", "--weights", str(atari_weights), "--headless", "--frames", "3", "--actions",
                 "random", "--fast", "--mode", "eager-fp32"]) == 0, capsys.readouterr().err
