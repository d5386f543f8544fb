"""Own weights format, official-checkpoint import, and the one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import save_official, tiny_agent

import diamond_play
from diamond_play.cli import main
from diamond_play.config import to_dict
from diamond_play.weights.official import infer_agent_config, official_state_dict, read_official_checkpoint


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("diamond-play: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def same_outputs(a, b) -> None:
    torch.manual_seed(0)
    x, obs = torch.randn(1, 3, 64, 64), torch.rand(1, 12, 64, 64) * 2 - 1
    act = torch.tensor([[1, 0, 3, 2]])
    assert torch.equal(a.denoiser.denoise(x, 0.7, obs, act), b.denoiser.denoise(x, 0.7, obs, act))


@pytest.mark.parametrize("with_yaml", [True, False])
def test_import_round_trips_an_official_checkpoint(tmp_path, capsys, with_yaml):
    agent = tiny_agent("atari")
    ckpt, cfg = save_official(agent, tmp_path / "official", "Breakout")
    args = ["import", ckpt, "--out", tmp_path / "w"] + (["--config", cfg] if with_yaml else [])
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["config.yaml", "model.safetensors"]
    loaded = diamond_play.load_agent(tmp_path / "w")
    assert loaded.config.game == "Breakout" and loaded.config.action_names == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert to_dict(loaded.config.agent) == to_dict(agent.config.agent)
    original = official_state_dict(agent)
    converted = official_state_dict(loaded)
    assert list(converted) == list(original)
    assert all(torch.equal(original[k], converted[k]) for k in original)
    same_outputs(agent, loaded)
    # The .pt also loads directly, with and without its YAML.
    same_outputs(agent, diamond_play.load_agent(ckpt, config=cfg if with_yaml else None))


def test_csgo_import_and_inference(tmp_path, capsys):
    agent = tiny_agent("csgo")
    ckpt, cfg = save_official(agent, tmp_path, "csgo")
    assert to_dict(infer_agent_config(read_official_checkpoint(ckpt))) == to_dict(agent.config.agent)
    code, _, err = run_cli(capsys, "import", ckpt, "--config", cfg, "--out", tmp_path / "w")
    assert code == 0, err
    loaded = diamond_play.load_agent(tmp_path / "w")
    assert loaded.config.kind == "csgo" and loaded.config.num_actions == 51 and len(loaded.config.action_names) == 51
    assert loaded.rew_end_model is None and loaded.actor_critic is None and loaded.upsampler is not None
    assert loaded.config.sampling.upsampler.num_steps_denoising == 10  # the paper's play setting


def test_info_command(tmp_path, capsys):
    agent = tiny_agent("atari")
    ckpt, _ = save_official(agent, tmp_path, "Breakout")
    code, out, _ = run_cli(capsys, "info", ckpt)
    assert code == 0 and "Breakout" in out and "denoiser" in out


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    ckpt, _ = save_official(tiny_agent("atari"), tmp_path, "Breakout")
    out = tmp_path / "w"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "import", ckpt, "--out", out)
    assert_user_error(code, err, "already exists", "--force")
    assert (out / "precious.txt").read_text() == "keep me"
    code, _, err = run_cli(capsys, "import", ckpt, "--out", out, "--force")
    assert code == 0 and not (out / "precious.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".w")]  # no temp dirs left behind


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, no traceback


def test_missing_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(capsys, "import", tmp_path / "nope.pt", "--out", tmp_path / "w")
    assert_user_error(code, err, "does not exist", "diamond-play download")


def test_truncated_checkpoint(tmp_path, capsys):
    ckpt, _ = save_official(tiny_agent("atari"), tmp_path, "Breakout")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "import", ckpt, "--out", tmp_path / "w")
    assert_user_error(code, err, "truncated or corrupt")
    assert not (tmp_path / "w").exists()


def test_pickle_with_code_is_refused(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.pt"
    torch.save({"denoiser.x": torch.zeros(1), "extra": Payload()}, bad)
    code, out, err = run_cli(capsys, "import", bad, "--out", tmp_path / "w")
    assert_user_error(code, err, "other than plain tensors")
    assert "this must never run" not in out


def test_not_an_agent_checkpoint(tmp_path, capsys):
    bad = tmp_path / "other.pt"
    torch.save({"model.weight": torch.zeros(3)}, bad)
    code, _, err = run_cli(capsys, "import", bad, "--out", tmp_path / "w")
    assert_user_error(code, err, "not a DIAMOND agent checkpoint")


def test_checkpoint_that_does_not_fit_its_config(tmp_path, capsys):
    agent = tiny_agent("atari")
    ckpt, cfg = save_official(agent, tmp_path, "Breakout")
    data = yaml.safe_load(cfg.read_text())
    data["denoiser"]["inner_model"]["channels"] = [8, 32]
    cfg.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, "import", ckpt, "--config", cfg, "--out", tmp_path / "w")
    assert_user_error(code, err, "does not fit its model config", "shapes")


def test_unknown_key_in_official_config(tmp_path, capsys):
    ckpt, cfg = save_official(tiny_agent("atari"), tmp_path, "Breakout")
    data = yaml.safe_load(cfg.read_text())
    data["denoiser"]["inner_model"]["chanels"] = [8, 16]
    cfg.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(capsys, "import", ckpt, "--config", cfg, "--out", tmp_path / "w")
    assert_user_error(code, err, "chanels")


def test_wrong_game_name(tmp_path, capsys):
    ckpt, _ = save_official(tiny_agent("atari"), tmp_path, "agent")
    code, _, err = run_cli(capsys, "import", ckpt, "--game", "Breakot", "--out", tmp_path / "w")
    assert_user_error(code, err, "unknown Atari game", "Breakout")
    code, _, err = run_cli(capsys, "import", ckpt, "--game", "Pong", "--out", tmp_path / "w")
    assert_user_error(code, err, "4 actions", "Pong has 6")


def test_corrupt_safetensors_and_bad_weights_dirs(tmp_path, capsys):
    ckpt, _ = save_official(tiny_agent("atari"), tmp_path, "Breakout")
    w = tmp_path / "w"
    assert run_cli(capsys, "import", ckpt, "--out", w)[0] == 0
    model = w / "model.safetensors"
    model.write_bytes(model.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "info", w)
    assert_user_error(code, err, "corrupt or truncated")

    code, _, err = run_cli(capsys, "info", tmp_path)  # a folder that is not a weights dir
    assert_user_error(code, err, "without config.yaml")

    (w / "config.yaml").write_text((w / "config.yaml").read_text().replace("game:", "gaem:"))
    code, _, err = run_cli(capsys, "info", w)
    assert_user_error(code, err, "unknown config key", "gaem")

    (w / "config.yaml").write_text("agent: [unclosed")
    code, _, err = run_cli(capsys, "info", w)
    assert_user_error(code, err, "not valid YAML")


def test_safetensors_with_wrong_shapes(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    ckpt, _ = save_official(tiny_agent("atari"), tmp_path, "Breakout")
    w = tmp_path / "w"
    assert run_cli(capsys, "import", ckpt, "--out", w)[0] == 0
    tensors = load_file(w / "model.safetensors")
    tensors["denoiser.inner_model.conv_in.weight"] = torch.zeros(8, 9, 3, 3)
    del tensors["actor_critic.critic_linear.bias"]
    save_file(tensors, w / "model.safetensors")
    code, _, err = run_cli(capsys, "info", w)
    assert_user_error(code, err, "missing tensors actor_critic.critic_linear.bias", "conv_in.weight")


def test_console_script_exit_code_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("diamond-play")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "diamond_play"]
    result = subprocess.run([*cmd, "import", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "w")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
