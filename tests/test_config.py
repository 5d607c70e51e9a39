"""engine/config.py (flags, presets, checkpoint flags) and what Trainer.main() leaves behind."""
import signal

import pytest

from engine import checkpoint, config
import Trainer
from conftest import TINY


def test_explicit_flags_leaves_the_parser_alone():
    """The defaults are never swapped out, not even while parsing: a type function that reads one sees it."""
    parser = config.build_parser()
    lr = parser._option_string_actions["--lr"]
    seen = []
    epochs = parser._option_string_actions["--num_epoch"]
    epochs.type = lambda value: seen.append(lr.default) or int(value)
    before = [(a.dest, a.default) for a in parser._actions]
    assert config.explicit_flags(parser, ["--num_epoch", "3", "--preset", "quick"]) == {"num_epoch", "preset"}
    assert seen == [1e-3] and [(a.dest, a.default) for a in parser._actions] == before


def test_head_flags_a_head_would_ignore_are_refused_by_name(capsys):
    for argv, flag in ((["--reference_gap", "8"], "--reference_gap"), (["--flow_deadzone", "0.1"], "--flow_deadzone"),
                       (["--output_activation", "none", "--flow_deadzone", "0.1"], "--flow_deadzone"),
                       (["--output_activation", "layered", "--flow_deadzone", "0.1"], "--flow_deadzone")):
        with pytest.raises(SystemExit):
            config.parse_args(argv)
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"{flag} has no effect with --output_activation" in err
    assert config.parse_args(["--output_activation", "layered", "--reference_gap", "8"]).reference_gap == 8
    assert config.parse_args(["--output_activation", "warp", "--flow_deadzone", "0.1"]).flow_deadzone == 0.1
    # a preset's values for its own head are dropped when another head is typed, not refused
    other = config.parse_args(["--preset", "quick", "--output_activation", "warp"])
    assert (other.reference_gap, other.output_activation) == (0, "warp")


def test_architecture_refuses_a_typed_flag_the_checkpoint_contradicts():
    ckpt = {"args": {"F_dim": 32, "output_activation": "warp"}}
    arch = checkpoint.architecture(ckpt, {"F_dim": 32}, "x.ckpt")
    assert arch["F_dim"] == 32 and arch["output_activation"] == "warp" and arch["L_dim"] == 32  # the course's
    with pytest.raises(checkpoint.CheckpointError, match="--F_dim 16 differs from the checkpoint's 32 .x.ckpt."):
        checkpoint.architecture(ckpt, {"F_dim": 16}, "x.ckpt")
    assert checkpoint.architecture({}, {"F_dim": 16}, "c.ckpt")["F_dim"] == 16  # a course checkpoint: the flags


def run_args(data, save_root, *extra):
    return ["--DR", str(data), *TINY, "--train_vi_len", "4", "--val_vi_len", "12", "--batch_size", "2",
            "--device", "cpu", "--save_root", str(save_root), "--gif_every", "0", *extra]


def test_main_restores_the_signal_handlers_and_notes_course_flags_once(tiny_data, tmp_path, capsys):
    def mine(signum, frame):
        pass

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGINT, mine)
        Trainer.main(run_args(tiny_data, tmp_path / "a", "--num_epoch", "1", "--gpu", "0", "--num_workers", "2"))
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) == saved[signal.SIGTERM]
        out = capsys.readouterr().out
        assert out.count("--gpu, --num_workers: accepted for the course's scripts, no effect here") == 1
        with pytest.raises(ValueError):  # and when it raises
            Trainer.main(run_args(tiny_data, tmp_path / "b", "--num_epoch", "1", "--train_vi_len", "400"))
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_a_resume_notes_a_head_flag_its_head_ignores():
    """On a resume the checkpoint names the head: a typed flag it ignores gets a note; a preset's is dropped."""
    args = config.parse_args(["--ckpt_path", "x.ckpt", "--reference_gap", "8"])
    note = config.resolve_checkpoint(args, {"args": {"output_activation": "warp"}, "epoch": 3})
    assert note == "resuming x.ckpt after epoch 3 (note: --reference_gap has no effect with --output_activation warp)"
    course = config.parse_args(["--ckpt_path", "c.ckpt", "--preset", "quick"])
    assert config.resolve_checkpoint(course, {"state_dict": {}}).endswith("--output_activation none)")
    assert (course.output_activation, course.reference_gap, course.flow_deadzone) == ("none", 0, 0)
