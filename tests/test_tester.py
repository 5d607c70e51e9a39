"""Tester: batched rollouts, the submission CSV, GIFs, checkpoints it refuses."""
import csv
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from engine import checkpoint, media
import Tester
from conftest import TINY, make_dataset
from dataloader import DatasetError
from engine.media import StreamWriter, side_by_side, submission_bytes, write_gif, write_submission
from modules.model import NoiseSource, VAE_Model, rollout_noise


def test_csv_format_and_chw_order(tmp_path):
    S, T, C, H, W = 2, 3, 3, 4, 5
    frames = (np.arange(S * T * C * H * W) * 7 % 256).astype(np.uint8).reshape(S, T, C, H, W)
    write_submission(frames, tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id"] + [str(i) for i in range(C * H * W)]
    assert len(rows) == 1 + S * T
    for r, row in enumerate(rows[1:]):
        s, t = divmod(r, T)
        assert int(row[0]) == r and len(row) == 1 + C * H * W
        values = [int(v) for v in row[1:]]
        assert all(0 <= v <= 255 for v in values)
        for c, h, w in [(0, 0, 0), (2, 3, 4), (1, 2, 0), (0, 3, 1)]:
            assert values[c * H * W + h * W + w] == frames[s, t, c, h, w]
    assert rows[1][1:] == [str(v) for v in frames[0, 0].flatten()]


def test_csv_of_extreme_values_round_trips():
    frames = np.array([0, 9, 10, 99, 100, 255], np.uint8).reshape(1, 1, 1, 2, 3)
    text = submission_bytes(frames).decode()
    assert text == "id,0,1,2,3,4,5\n0,0,9,10,99,100,255\n"


def test_csv_blocks_join_into_the_same_file():
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 3, 2, 3), dtype=np.uint8)
    whole = submission_bytes(frames, rows_per_block=1000)
    assert submission_bytes(frames, rows_per_block=3) == whole  # blocks of 3, 3, 3, 1 rows
    assert [line.split(",")[0] for line in whole.decode().splitlines()[1:]] == [str(r) for r in range(10)]


def test_stream_writer_files_equal_the_whole_video_writers(tmp_path):
    """Chunks of uneven length, built on 3 threads in any order, give the same bytes as writing at once."""
    rng = np.random.default_rng(0)
    video, poses = (rng.integers(0, 256, (2, 12, 3, 4, 6), dtype=np.uint8) for _ in range(2))
    write_submission(video, tmp_path / "whole.csv")
    for s in range(2):
        write_gif(side_by_side(video[s], poses[s]), tmp_path / f"whole{s}.gif")
    with ThreadPoolExecutor(3) as pool:
        writer = StreamWriter(pool, video.shape, tmp_path / "s.csv", [tmp_path / "s0.gif", tmp_path / "s1.gif"], [poses])
        for start, end in [(0, 1), (1, 6), (6, 11), (11, 12)]:
            writer.add(start, torch.from_numpy(video[:, start:end]))
        frames = writer.finish()
    assert np.array_equal(frames, video)
    assert (tmp_path / "s.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    for s in range(2):
        assert (tmp_path / f"s{s}.gif").read_bytes() == (tmp_path / f"whole{s}.gif").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s0.gif", "s1.gif", "whole.csv", "whole0.gif",
                                                            "whole1.gif"]  # no temp files left


def test_stream_writer_refuses_bad_chunks_and_a_missing_frame(tmp_path):
    video = np.zeros((2, 5, 3, 4, 6), np.uint8)
    chunk = lambda n: torch.zeros(2, n, 3, 4, 6, dtype=torch.uint8)  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        writer = StreamWriter(pool, video.shape, tmp_path / "s.csv")
        with pytest.raises(ValueError, match=r"shape \(3, 2, 3, 4, 6\) at frame 0 does not fit frames of shape \(2, 5"):
            writer.add(0, torch.zeros(3, 2, 3, 4, 6, dtype=torch.uint8))
        with pytest.raises(ValueError, match="at frame 4 does not fit"):
            writer.add(4, chunk(2))  # frames 4 and 5 of 5
        with pytest.raises(ValueError, match="at frame -1 does not fit"):
            writer.add(-1, chunk(1))
        with pytest.raises(ValueError, match="chunks must be uint8, got torch.float32"):
            writer.add(0, torch.zeros(2, 1, 3, 4, 6))
        writer.add(0, chunk(3))
        with pytest.raises(ValueError, match=r"frames 2..3 overlap frames already added"):
            writer.add(2, chunk(2))
        writer.add(3, chunk(1))
        with pytest.raises(RuntimeError, match="4 of 5 frames were added"):
            writer.finish()
    assert not list(tmp_path.iterdir())


def test_stream_writer_error_in_a_thread_is_raised_and_writes_nothing(tmp_path, monkeypatch):
    def broken(frame):
        raise OSError("quantiser broke")
    monkeypatch.setattr(media, "gif_frame", broken)
    video = torch.zeros(1, 4, 3, 4, 6, dtype=torch.uint8)
    with ThreadPoolExecutor(1) as pool:
        writer = StreamWriter(pool, tuple(video.shape), tmp_path / "s.csv", [tmp_path / "s.gif"])
        writer.add(0, video[:, :2])
        writer.jobs[0].exception()  # let the thread fail
        with pytest.raises(OSError, match="quantiser broke"):
            writer.add(2, video[:, 2:])  # the next chunk reports it: the rollout stops early
        with pytest.raises(OSError, match="quantiser broke"):
            writer.finish()
    assert not list(tmp_path.iterdir())


def test_streamed_tester_with_k_samples_writes_sample_0(trained, tmp_path, monkeypatch):
    """The GPU's path (chunks handed over during the rollout), taken on CPU: the same files."""
    plain = run_tester(trained, tmp_path / "plain", "--eval_samples", "2")
    monkeypatch.setattr(Tester, "streams", lambda device: True)
    streamed = run_tester(trained, tmp_path / "streamed", "--eval_samples", "2")
    assert np.array_equal(plain, streamed)
    for name in ["submission.csv", "pred_seq0.gif", "pred_seq2.gif"]:
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes()


def test_rollout_hands_each_chunk_to_on_chunk():
    model = VAE_Model(8, 4, 4, 8, output_activation="warp").eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
    g = torch.Generator().manual_seed(0)
    first, labels = torch.rand(2, 3, 16, 24, generator=g), torch.rand(2, 40, 3, 16, 24, generator=g)
    seen = []
    pred = model.rollout_samples(first, labels, 1, samples=2, on_chunk=lambda start, f: seen.append((start, f[::2].clone())))
    assert [start for start, _ in seen] == [1, 17, 33] and [f.shape[1] for _, f in seen] == [16, 16, 7]
    assert torch.equal(torch.cat([f for _, f in seen], 1), pred[:, 0, 1:])  # rows s*K: sample 0


def test_batched_rollout_equals_one_at_a_time():
    torch.manual_seed(0)
    model = VAE_Model(8, 4, 4, 8).eval()
    first, labels = torch.rand(3, 3, 16, 24), torch.rand(3, 21, 3, 16, 24)
    batched = model.rollout(first, labels, rollout_noise(model, 5, [0, 1, 2], 0, 16, 24, "cpu"))
    for i in range(3):
        alone = model.rollout(first[i:i + 1], labels[i:i + 1], rollout_noise(model, 5, [i], 0, 16, 24, "cpu"))
        assert torch.allclose(batched[i:i + 1], alone, atol=1e-5)
    assert torch.equal(batched[:, 0], first)
    other_seed = model.rollout(first, labels, rollout_noise(model, 6, [0, 1, 2], 0, 16, 24, "cpu"))
    assert not torch.allclose(batched[:, 1:], other_seed[:, 1:])


def run_tester(trained, out, *extra):
    data, ckpt = trained
    return Tester.main(["--ckpt_path", str(ckpt), "--DR", str(data), "--test_len", "10", "--device", "cpu",
                        "--save_root", str(out), *extra])


def test_end_to_end_files_first_row_and_determinism(trained, tmp_path):
    frames = run_tester(trained, tmp_path / "a")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["contact_sheet_seq0.png", "contact_sheet_seq1.png", "contact_sheet_seq2.png", "pred_seq0.gif",
                     "pred_seq1.gif", "pred_seq2.gif", "psnr.csv", "psnr_per_frame.png", "submission.csv"]
    rows = list(csv.reader(open(tmp_path / "a" / "submission.csv")))
    assert len(rows) == 1 + 3 * 10 and len(rows[0]) == 1 + 3 * 32 * 64
    from dataloader import decode
    for s in range(3):
        given = decode(trained[0] / "test" / "test_img" / str(s) / "frame0.png", 32, 64)
        assert [int(v) for v in rows[1 + s * 10][1:]] == given.flatten().tolist()
    assert frames.shape == (3, 10, 3, 32, 64) and frames.dtype == np.uint8
    assert (tmp_path / "a" / "submission.csv").read_bytes() == submission_bytes(frames)  # the streamed file
    gt, labels = (np.stack([decode(trained[0] / "test" / d / "1" / f"frame{t}.png", 32, 64) for t in range(10)])
                  for d in ("test_gt", "test_label"))
    write_gif(side_by_side(frames[1], gt, labels), tmp_path / "seq1.gif")  # prediction | ground truth | pose
    assert (tmp_path / "a" / "pred_seq1.gif").read_bytes() == (tmp_path / "seq1.gif").read_bytes()
    run_tester(trained, tmp_path / "b", "--no_gif")
    assert (tmp_path / "a" / "submission.csv").read_bytes() == (tmp_path / "b" / "submission.csv").read_bytes()
    assert not list((tmp_path / "b").glob("*.gif"))
    run_tester(trained, tmp_path / "c", "--no_gif", "--seed", "7")
    assert (tmp_path / "a" / "submission.csv").read_bytes() != (tmp_path / "c" / "submission.csv").read_bytes()


def test_scores_against_gt_dir(trained, tmp_path):
    """--gt_dir replaces the default ground truth: scores against inverted frames are those of the inverted frames."""
    from PIL import Image, ImageOps
    from dataloader import decode
    from engine.metrics import psnr_per_frame
    data, _ = trained
    for png in (data / "test" / "test_gt").rglob("*.png"):
        out = tmp_path / "gt" / png.relative_to(data / "test" / "test_gt")
        out.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(Image.open(png).convert("RGB")).save(out)
    frames = run_tester(trained, tmp_path / "a", "--no_gif", "--gt_dir", str(tmp_path / "gt"))
    run_tester(trained, tmp_path / "default", "--no_gif")
    rows = list(csv.reader(open(tmp_path / "a" / "psnr.csv")))
    assert rows[0] == ["sequence", "psnr", "ssim", "psnr_best_of_k", "ssim_best_of_k", "region_psnr", "room_psnr",
                       *(f"{b}_{k}psnr" for b in ("copy_first_frame", "sticker", "paste") for k in ("", "region_", "room_"))]
    assert len(rows) == 4 and all(-1 <= float(r[2]) <= 1 for r in rows[1:])
    assert all(r[1] == r[3] and r[2] == r[4] for r in rows[1:])  # one sample: best of 1 = mean
    default = list(csv.reader(open(tmp_path / "default" / "psnr.csv")))
    for s, row in enumerate(rows[1:]):
        gt = np.stack([decode(tmp_path / "gt" / str(s) / f"frame{t}.png", 32, 64) for t in range(10)])
        want = psnr_per_frame(torch.from_numpy(frames[s:s + 1, 1:]).float() / 255,
                              torch.from_numpy(gt[None, 1:]).float() / 255).mean().item()
        assert float(row[1]) == pytest.approx(want, abs=1e-3) and row[1] != default[s + 1][1]


def test_too_few_labels_names_the_folder(trained, tmp_path):
    data, ckpt = trained
    with pytest.raises(DatasetError, match=r"test_label/0 has 10 pose labels, fewer than the 630"):
        Tester.main(["--ckpt_path", str(ckpt), "--DR", str(data), "--device", "cpu", "--save_root", str(tmp_path)])


def test_bad_checkpoints(trained, tmp_path):
    data, ckpt = trained
    truncated = tmp_path / "t.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(checkpoint.CheckpointError, match="t.ckpt: not a readable checkpoint"):
        run_tester((data, truncated), tmp_path / "x")
    with pytest.raises(checkpoint.CheckpointError, match="--F_dim 16 differs"):
        run_tester(trained, tmp_path / "x", "--F_dim", "16")
    course = tmp_path / "course.ckpt"
    torch.save({"state_dict": torch.load(ckpt, weights_only=True)["state_dict"]}, course)
    with pytest.raises(checkpoint.CheckpointError, match="course.ckpt: weights do not fit"):
        run_tester((data, course), tmp_path / "x")  # course widths by default: 128, 32, ...
    run_tester((data, course), tmp_path / "y", "--no_gif", *TINY, "--output_activation", "sigmoid")
    assert (tmp_path / "y" / "submission.csv").read_bytes() == \
        (run_tester(trained, tmp_path / "z", "--no_gif") is not None and (tmp_path / "z" / "submission.csv").read_bytes())


def test_bf16_rollout_stays_within_0_3_db(trained, tmp_path):
    fp32_frames = run_tester(trained, tmp_path / "fp32", "--no_gif")
    bf16_frames = run_tester(trained, tmp_path / "bf16", "--no_gif", "--amp")
    assert not np.array_equal(fp32_frames, bf16_frames)  # --amp really ran in bf16
    read = lambda p: [float(r[1]) for r in list(csv.reader(open(p / "psnr.csv")))[1:]]  # noqa: E731
    fp32, bf16 = read(tmp_path / "fp32"), read(tmp_path / "bf16")
    assert abs(sum(fp32) / len(fp32) - sum(bf16) / len(bf16)) < 0.3


def test_rollout_copies_each_chunk_out_of_a_reused_padded_buffer():
    """What a CUDA graph does (one output buffer, overwritten each call; short chunks padded to full
    length), done on CPU: the rollout must equal the plain one."""
    model = VAE_Model(8, 4, 4, 8, output_activation="warp").eval()
    torch.nn.init.normal_(model.Generator[-1].weight, std=0.1)
    g = torch.Generator().manual_seed(0)
    first, labels = torch.rand(2, 3, 16, 24, generator=g), torch.rand(2, 21, 3, 16, 24, generator=g)  # 16 + 4
    buffer = torch.empty(2, 16, 3, 16, 24)

    def step(prev, chunk_labels, z, first_frame):
        pad = 16 - chunk_labels.shape[1]
        chunk_labels = torch.cat([chunk_labels, chunk_labels[:, -1:].expand(-1, pad, -1, -1, -1)], 1)
        buffer.copy_(model.rollout_chunk(prev, chunk_labels, z, first_frame))
        return buffer

    noise = lambda: rollout_noise(model, 3, [0, 1], 0, 16, 24, "cpu")  # noqa: E731
    expected = model.rollout(first, labels, noise())
    assert torch.allclose(model.rollout(first, labels, noise(), step=step), expected, atol=1e-6)


def test_k_samples_batched_equal_k_single_runs_and_csv_keeps_sample_0(trained, tmp_path):
    data, ckpt = trained
    model = Tester.load_model(Tester.parse_args(["--ckpt_path", str(ckpt), "--device", "cpu"]))[0]
    g = torch.Generator().manual_seed(0)
    first, labels = torch.rand(2, 3, 48, 96, generator=g), torch.rand(2, 6, 3, 48, 96, generator=g)
    keys = [(1, s, k) for s in range(2) for k in range(3)]
    batched = model.rollout(first.repeat_interleave(3, 0), labels.repeat_interleave(3, 0), NoiseSource(keys, (4, 48, 96), "cpu"))
    for row, (seed, s, k) in enumerate(keys):
        alone = model.rollout(first[s:s + 1], labels[s:s + 1], NoiseSource([(seed, s, k)], (4, 48, 96), "cpu"))
        assert torch.allclose(batched[row:row + 1], alone, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1])  # the samples differ
    one = run_tester(trained, tmp_path / "k1", "--no_gif")
    three = run_tester(trained, tmp_path / "k3", "--no_gif", "--eval_samples", "3")
    assert (tmp_path / "k1" / "submission.csv").read_bytes() == (tmp_path / "k3" / "submission.csv").read_bytes()
    rows = list(csv.DictReader(open(tmp_path / "k3" / "psnr.csv")))
    assert all(float(r["psnr_best_of_k"]) >= float(r["psnr"]) - 1e-6 for r in rows)
    assert np.array_equal(one, three)


def test_score_reports_the_mean_of_samples_and_picks_the_best_by_psnr(tmp_path):
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(2, 5, 3, 16, 16, generator=g) * 255).round().to(torch.uint8).numpy()
    target = torch.from_numpy(gt).float() / 255
    near, far = target + 0.01, target + 0.2  # sample 1 is the better one
    pred = torch.stack([far, near], 1).clamp(0, 1)  # [S=2, K=2, T, 3, H, W]
    labels = np.full_like(gt, 255)
    labels[:, :, :, 4:9, 4:9] = 0  # a dancer in every frame
    Tester.score(pred, gt, labels, ["a", "b"], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "psnr.csv")))
    from engine.metrics import psnr_per_frame
    from engine.metrics import ssim
    for s, row in enumerate(rows):
        p_far = psnr_per_frame(pred[s:s + 1, 0, 1:], target[s:s + 1, 1:]).mean().item()
        p_near = psnr_per_frame(pred[s:s + 1, 1, 1:], target[s:s + 1, 1:]).mean().item()
        assert float(row["psnr_best_of_k"]) == pytest.approx(p_near, abs=1e-3)
        assert float(row["psnr"]) == pytest.approx((p_far + p_near) / 2, abs=1e-3)
        s_near = ssim(pred[s:s + 1, 1, 1:], target[s:s + 1, 1:]).mean().item()
        assert float(row["ssim_best_of_k"]) == pytest.approx(s_near, abs=1e-3)  # the best sample's SSIM
        copy = psnr_per_frame(target[s:s + 1, :1].expand(-1, 4, -1, -1, -1), target[s:s + 1, 1:]).mean().item()
        assert float(row["copy_first_frame_psnr"]) == pytest.approx(copy, abs=1e-3)  # frames 1..T-1 against frame 0


def test_psnr_csv_region_columns_are_those_of_the_written_frames(trained, tmp_path, capsys):
    from dataloader import decode
    from engine.metrics import pose_region, region_psnr
    frames = run_tester(trained, tmp_path / "a", "--no_gif")
    rows = list(csv.DictReader(open(tmp_path / "a" / "psnr.csv")))
    for s, row in enumerate(rows):
        gt, labels = (torch.from_numpy(np.stack([decode(trained[0] / "test" / d / str(s) / f"frame{t}.png", 32, 64)
                                                 for t in range(10)])).float() / 255 for d in ("test_gt", "test_label"))
        region = pose_region(labels[1:])
        pred = torch.from_numpy(frames[s, 1:]).float() / 255
        assert region.any(1).any(1).all()  # every frame has a dancer: the means below are over 9 frames
        assert float(row["region_psnr"]) == pytest.approx(region_psnr(pred, gt[1:], region).mean().item(), abs=1e-3)
        copy = region_psnr(gt[:1].expand(9, -1, -1, -1), gt[1:], region).mean().item()
        assert float(row["copy_first_frame_region_psnr"]) == pytest.approx(copy, abs=1e-3)
        assert float(row["copy_first_frame_region_psnr"]) < float(row["copy_first_frame_psnr"])  # the square moves
    mean = [line for line in capsys.readouterr().out.splitlines() if "mean PSNR" in line][0]
    want = np.mean([float(r["region_psnr"]) for r in rows])
    best = max(np.mean([float(r[f"{b}_region_psnr"]) for r in rows]) for b in ("copy_first_frame", "sticker", "paste"))
    assert f"region {want:.2f} (" in mean and f"{best:.2f}: {want - best:+.2f})" in mean


def test_contact_sheets_show_the_prediction_truth_and_pose_at_fixed_frames(trained, tmp_path):
    from PIL import Image
    from dataloader import decode
    frames = run_tester(trained, tmp_path / "a", "--no_gif")
    sheet = np.asarray(Image.open(tmp_path / "a" / "contact_sheet_seq1.png").convert("RGB"))
    (H, W), scale, columns = (32, 64), 3, [0, 9]  # a 10-frame sequence: frame 0 and its last
    assert media.contact_sheet_frames(10) == columns and media.contact_sheet_frames(630) == list(media.CONTACT_SHEET_FRAMES)
    assert media.contact_sheet_frames(60) == [0, 25, 50, 59]
    assert sheet.shape == (media.SHEET_HEADER_H + 4 * (H * scale + media.SHEET_GAP) - media.SHEET_GAP,
                           media.SHEET_NAME_W + 2 * (W * scale + media.SHEET_GAP) - media.SHEET_GAP, 3)
    gt, pose = (np.stack([decode(trained[0] / "test" / d / "1" / f"frame{t}.png", H, W) for t in range(10)])
                for d in ("test_gt", "test_label"))
    diff = np.minimum(np.abs(frames[1].astype(int) - gt.astype(int)) * 3, 255).astype(np.uint8)
    for row, video in enumerate((frames[1], gt, diff, pose)):
        for c, t in enumerate(columns):
            y = media.SHEET_HEADER_H + row * (H * scale + media.SHEET_GAP)
            x = media.SHEET_NAME_W + c * (W * scale + media.SHEET_GAP)
            enlarged = video[t].transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
            assert np.array_equal(sheet[y:y + H * scale, x:x + W * scale], enlarged), (row, t)
    # without ground truth: prediction and pose rows only
    data = make_dataset(tmp_path / "DR", n_test=1, test_len=10, style="frame")
    import shutil
    shutil.rmtree(data / "test" / "test_gt")
    Tester.main(["--ckpt_path", str(trained[1]), "--DR", str(data), "--test_len", "10", "--device", "cpu",
                 "--save_root", str(tmp_path / "b"), "--no_gif"])
    sheet = np.asarray(Image.open(tmp_path / "b" / "contact_sheet_seq0.png").convert("RGB"))
    assert sheet.shape[0] == media.SHEET_HEADER_H + 2 * (H * scale + media.SHEET_GAP) - media.SHEET_GAP
    assert not (tmp_path / "b" / "psnr.csv").exists()


def test_compile_without_a_cuda_graph_says_it_does_nothing(trained, tmp_path, capsys):
    plain = run_tester(trained, tmp_path / "a", "--no_gif")
    compiled = run_tester(trained, tmp_path / "b", "--no_gif", "--compile")
    assert np.array_equal(plain, compiled)
    assert "note: --compile compiles the CUDA graph's frame step" in capsys.readouterr().err


COURSE_TESTER_FLAGS = ["--batch_size", "2", "--lr", "0.001", "--device", "cpu", "--optim", "Adam", "--gpu", "1",
                       "--test", "--store_visualization", "--num_workers", "0", "--num_epoch", "70", "--per_save", "3",
                       "--partial", "1.0", "--train_vi_len", "16", "--val_vi_len", "10", "--frame_H", "32",
                       "--frame_W", "64", "--tfr", "1.0", "--tfr_sde", "10", "--tfr_d_step", "0.1", "--fast_train",
                       "--fast_partial", "0.4", "--fast_train_epoch", "5", "--kl_anneal_type", "Cyclical",
                       "--kl_anneal_cycle", "10", "--kl_anneal_ratio", "1", "--no_sanity", "--make_gif"]


def test_every_course_tester_flag_is_accepted_and_noted_once(trained, tmp_path, capsys):
    """A course Tester command line (its widths aside: this checkpoint is tiny) runs unchanged."""
    data, ckpt = trained
    frames = Tester.main(["--ckpt_path", str(ckpt), "--DR", str(data), "--save_root", str(tmp_path / "a"),
                          *COURSE_TESTER_FLAGS])
    assert frames.shape[1] == 10  # --val_vi_len is the course's name of --test_len
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "no effect in Tester.py" in line]
    assert len(notes) == 1 and "--num_workers" in notes[0] and "--make_gif" in notes[0]
    assert "--val_vi_len" not in notes[0] and "--frame_H" not in notes[0]


def test_dataset_defaults_to_the_checkpoints_and_is_printed_first_and_last(trained, tmp_path, capsys):
    data, ckpt = trained
    Tester.main(["--ckpt_path", str(ckpt), "--test_len", "10", "--device", "cpu", "--save_root", str(tmp_path / "a"),
                 "--no_gif"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert str(data) in lines[0] and str(data) in lines[-1]
    moved = dict(torch.load(ckpt, weights_only=True), args={"DR": str(tmp_path / "gone"), **{
        k: v for k, v in torch.load(ckpt, weights_only=True)["args"].items() if k != "DR"}})
    torch.save(moved, tmp_path / "moved.ckpt")
    with pytest.raises(DatasetError, match=r"gone, does not exist: give --DR"):
        Tester.main(["--ckpt_path", str(tmp_path / "moved.ckpt"), "--device", "cpu", "--save_root", str(tmp_path / "b")])
    torch.save({"state_dict": moved["state_dict"]}, tmp_path / "course.ckpt")
    with pytest.raises(checkpoint.CheckpointError, match=r"course.ckpt records no dataset .*: give --DR"):
        Tester.main(["--ckpt_path", str(tmp_path / "course.ckpt"), "--device", "cpu"])


def test_another_tests_outputs_are_refused_unless_overwrite(trained, tmp_path):
    first = run_tester(trained, tmp_path / "a", "--no_gif")
    (tmp_path / "a" / "pred_seq7.gif").write_bytes(b"an older test of more sequences")
    with pytest.raises(checkpoint.CheckpointError, match=r"a holds another test's outputs \(pred_seq7.gif, psnr.csv, "
                                                         r"psnr_per_frame.png, ...\): .* add --overwrite"):
        run_tester(trained, tmp_path / "a", "--no_gif", "--seed", "2")
    assert np.array_equal(first, run_tester(trained, tmp_path / "a", "--no_gif", "--overwrite"))
    assert not (tmp_path / "a" / "pred_seq7.gif").exists()


def test_a_killed_testers_temp_files_are_removed_on_the_next_start(trained, tmp_path, capsys):
    import subprocess
    out = tmp_path / "a"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is no longer running
    stale, live = out / f".submission.csv.tmp{dead.pid}", out / f".pred_seq0.gif.tmp{os.getppid()}.gif"
    stale.write_text("half a CSV"), live.write_text("another process is writing this")
    run_tester(trained, out, "--no_gif")
    assert not stale.exists() and live.exists()
    assert f"removed {stale}" in capsys.readouterr().out
