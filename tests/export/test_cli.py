from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import yaml

from export.cli import CONFIG_DIR, UsageError, _methods, load_config, main
from export.data import fingerprint
from export.patchcore import PatchCoreConfig
from tests.export.helpers import session

METHODS = _methods()
BUNDLE_KEYS = [
    "schema_version",
    "method",
    "backbone",
    "created_at",
    "input",
    "preprocessing_in_graph",
    "outputs",
    "precision",
    "files",
    "training",
    "method_params",
    "export_check",
    "versions",
    "engines",
]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "export-engine: error" in line or "Traceback" in line]


def test_export_writes_a_valid_bundle(tmp_path: Path, write_images, capsys) -> None:
    write_images(tmp_path / "good", 6, size=(80, 72))
    out = tmp_path / "bundle"
    code, stderr = run_cli(
        capsys,
        "--method",
        "patchcore",
        "--data",
        str(tmp_path / "good"),
        "--out",
        str(out),
        "--size",
        "64",
        "--holdout",
        "0.2",
        "--coreset-ratio",
        "0.05",
        "--seed",
        "1",
    )
    assert code == 0, stderr
    document = yaml.safe_load((out / "bundle.yaml").read_text())
    assert list(document) == BUNDLE_KEYS
    assert (document["schema_version"], document["method"], document["backbone"]) == (
        1,
        "patchcore",
        "efficientnet_lite0",
    )
    created = datetime.fromisoformat(document["created_at"])
    assert created.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - created) < timedelta(minutes=10)
    assert document["input"] == {
        "name": "image",
        "height": 64,
        "width": 64,
        "channels": 3,
        "dtype": "uint8",
        "layout": "NHWC",
        "colour": "RGB",
    }
    assert document["preprocessing_in_graph"] == {"scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert document["outputs"] == {
        "anomaly_map": {"shape": ["B", 1, 64, 64], "dtype": "float32"},
        "score": {"shape": ["B"], "dtype": "float32"},
    }
    assert document["precision"] == {"fp16": True}
    check = document["export_check"]
    assert check["images"] == 4 and 0 <= check["map_max_rel_diff"] <= 1e-3 and 0 <= check["score_max_rel_diff"] <= 1e-3
    assert document["engines"] == []
    assert set(document["versions"]) == {"python", "torch", "torchvision", "timm", "onnx", "edge_inspect"}

    assert sorted(p.name for p in out.iterdir()) == ["bundle.yaml", "model.onnx"]
    for name, record in document["files"].items():
        data = (out / name).read_bytes()
        assert record == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    training = document["training"]
    held = [Path(p) for p in training["holdout"]]
    assert training["data"] == str((tmp_path / "good").resolve()) and training["count"] == 5 and len(held) == 1
    assert held[0].is_absolute() and held[0].is_file()
    train_files = sorted(set((tmp_path / "good").resolve().iterdir()) - set(held))
    assert training["files_sha256"] == fingerprint(train_files, tmp_path / "good").sha256

    params = document["method_params"]
    assert params["coreset"] == "greedy" and params["coreset_ratio"] == 0.05 and params["seed"] == 1
    assert params["feature_dim"] == 152 and params["bank_size"] == round(0.05 * 5 * 8 * 8)

    runtime = session(out / "model.onnx")
    anomaly_map, score = runtime.run(None, {"image": np.zeros((2, 64, 64, 3), np.uint8)})
    assert anomaly_map.shape == (2, 1, 64, 64) and score.shape == (2,)


@pytest.mark.parametrize("kind", ["missing", "empty folder", "a file"])
def test_bad_data_is_one_line_and_exit_2(tmp_path: Path, capsys, kind: str) -> None:
    bad = tmp_path / kind
    if kind == "empty folder":
        bad.mkdir()
    elif kind == "a file":
        bad.write_bytes(b"x")
    code, stderr = run_cli(capsys, "--method", "patchcore", "--data", str(bad), "--out", str(tmp_path / "b"))
    assert code == 2
    [line] = stderr.strip().splitlines()
    assert line.startswith("export-engine: error: ") and str(bad) in line
    assert not (tmp_path / "b").exists()


def test_unreadable_training_image_is_named(tmp_path: Path, write_images, capsys) -> None:
    files = write_images(tmp_path / "good", 3)
    files[2].write_bytes(b"not an image")
    code, stderr = run_cli(
        capsys,
        "--method",
        "patchcore",
        "--data",
        str(tmp_path / "good"),
        "--out",
        str(tmp_path / "b"),
        "--size",
        "64",
        "--holdout",
        "0",
    )
    assert code == 2
    [line] = error_lines(stderr)
    assert str(files[2].resolve()) in line


def test_existing_bundle_is_not_overwritten(tmp_path: Path, write_images, capsys) -> None:
    write_images(tmp_path / "good", 2)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "calibration.yaml").write_text("threshold: 1\n")
    code, stderr = run_cli(
        capsys, "--method", "patchcore", "--data", str(tmp_path / "good"), "--out", str(tmp_path / "b"), "--size", "64"
    )
    assert code == 2 and "not an empty directory" in error_lines(stderr)[0]


def test_bad_option_values_are_one_line_and_exit_2(tmp_path: Path, write_images, capsys) -> None:
    write_images(tmp_path / "good", 2)
    common = ["--method", "patchcore", "--data", str(tmp_path / "good"), "--out", str(tmp_path / "b")]
    for extra, needle in (
        (["--coreset-ratio", "0"], "coreset_ratio 0.0"),
        (["--size", "100"], "multiple of 16"),
        (["--holdout", "1"], "holdout fraction"),
    ):
        code, stderr = run_cli(capsys, *common, *extra)
        assert code == 2
        [line] = error_lines(stderr)
        assert needle in line


def test_config_file_then_command_line(tmp_path: Path, capsys) -> None:
    from export.cli import build_parser, load_config, make_config

    config = tmp_path / "pc.yaml"
    config.write_text("coreset: random\ncoreset_ratio: 0.02\nseed: 7\n")
    args = build_parser(METHODS).parse_args(
        ["--method", "patchcore", "--data", "d", "--out", "o", "--config", str(config), "--seed", "3"]
    )
    merged = make_config(PatchCoreConfig, load_config(PatchCoreConfig, args.config, "patchcore"), args)
    assert (merged.coreset, merged.coreset_ratio, merged.seed, merged.size) == ("random", 0.02, 3, 256)

    config.write_text("coreset_ratios: 0.02\n")
    code, stderr = run_cli(
        capsys, "--method", "patchcore", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(config)
    )
    assert (
        code == 2 and "coreset_ratios: unknown key (got 0.02); did you mean 'coreset_ratio'?" in error_lines(stderr)[0]
    )
    config.write_text("size: large\n")
    code, stderr = run_cli(
        capsys, "--method", "patchcore", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--config", str(config)
    )
    assert code == 2 and "size 'large': expected PX, HxW" in error_lines(stderr)[0]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_shipped_config_matches_the_code_defaults(method: str) -> None:
    shipped = yaml.safe_load((CONFIG_DIR / f"{method}.yaml").read_text())
    assert shipped == dataclasses.asdict(METHODS[method].config())
    assert load_config(METHODS[method].config, None, method) == shipped  # every value of its field's type


@pytest.mark.parametrize(
    "method, bad, needle",
    [
        ("autoencoder", {"score": "ssim"}, "score"),
        ("autoencoder", {"depth": 7}, "depth"),
        ("autoencoder", {"size": 100}, "multiple of 8"),
        ("autoencoder", {"kernel_size": 4}, "kernel_size"),
        ("autoencoder", {"mc_passes": 0}, "mc_passes"),
        ("autoencoder", {"lr": 0.0}, "lr"),
        ("glass", {"mode": "sphere"}, "mode"),
        ("glass", {"manifold_min": 2.0}, "manifold"),
        ("glass", {"hard_mining": 1.0}, "hard_mining"),
        ("glass", {"las_every": 0}, "las_every"),
        ("glass", {"size": 100}, "multiple of 16"),
        ("simplenet", {"size": 100}, "multiple of 16"),
        ("simplenet", {"noise_std": 0.0}, "noise_std"),
        ("simplenet", {"epochs": 0}, "epochs"),
        ("simplenet", {"patience": 0}, "patience"),
        ("simplenet", {"backbone": "vgg"}, "backbone"),
        ("ssl", {"fusion": "sum"}, "fusion"),
        ("ssl", {"levels": "layer3,layer2"}, "levels"),
        ("ssl", {"levels": "layer5"}, "levels"),
        ("ssl", {"levels": ""}, "levels"),
        ("ssl", {"size": 120}, "multiple of 16"),
        ("ssl", {"epochs": 0}, "epochs"),
        ("ssl", {"coreset_ratio": 0.0}, "coreset_ratio"),
        ("ssl", {"patience": 0}, "patience"),
    ],
)
def test_bad_config_values_are_refused(method: str, bad: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        METHODS[method].config(**bad)


def test_help_explains_options_and_lists_only_implemented_methods(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--method",
        "--data",
        "--out",
        "--backbone",
        "--backbone-weights",
        "--size",
        "--coreset",
        "--coreset-ratio",
        "--holdout",
        "--seed",
        "--config",
        "--batch-size",
    ):
        assert option in text
    assert "{autoencoder,glass,patchcore,simplenet,ssl}" in text and "efficientnet_lite0" in text
    with pytest.raises(SystemExit) as exit_:
        main(["--method", "fastflow", "--data", "d", "--out", "o"])
    assert exit_.value.code == 2


def test_options_of_other_methods_are_refused_before_training(tmp_path: Path, write_images, capsys) -> None:
    write_images(tmp_path / "good", 2)
    common = ["--data", str(tmp_path / "good"), "--out", str(tmp_path / "b"), "--size", "64"]
    code, stderr = run_cli(capsys, "--method", "patchcore", *common, "--epochs", "5", "--margin", "3", "--resume")
    assert code == 2 and not (tmp_path / "b").exists()
    [line] = error_lines(stderr)
    assert (
        "patchcore does not take --epochs (only autoencoder, glass, simplenet, ssl), --margin (only simplenet), "
        "--resume (only autoencoder, glass, simplenet, ssl)"
    ) in line
    code, stderr = run_cli(capsys, "--method", "ssl", *common, "--backbone", "wide_resnet50_2")
    assert code == 2 and "--backbone (only glass, patchcore, simplenet)" in error_lines(stderr)[0]


@pytest.mark.parametrize("method, resumable", [("patchcore", False), ("ssl", True)])
def test_ctrl_c_offers_resume_only_where_there_is_one(
    tmp_path: Path, write_images, capsys, monkeypatch, method: str, resumable: bool
) -> None:
    import export.patchcore
    import export.ssl

    def interrupted(*_args) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(export.patchcore, "export_patchcore", interrupted)
    monkeypatch.setattr(export.ssl, "export_ssl", interrupted)
    write_images(tmp_path / "good", 2)
    code, stderr = run_cli(capsys, "--method", method, "--data", str(tmp_path / "good"), "--out", str(tmp_path / "b"))
    assert code == 130 and "interrupted" in stderr and ("--resume" in stderr) == resumable


@pytest.mark.parametrize(
    "method, text, needle",
    [
        ("simplenet", "noise_std: abc", "noise_std: must be a number or null (got 'abc')"),
        ("simplenet", "textures: 5", "textures: must be a string or null (got 5)"),
        ("simplenet", "patience: 1.5", "patience: must be an integer or null (got 1.5)"),
        ("glass", "images_per_epoch: yes", "images_per_epoch: must be an integer or null (got True)"),
        ("autoencoder", "epochs: true", "epochs: must be an integer (got True)"),
        ("ssl", "reference: 1", "reference: must be true or false (got 1)"),
        ("patchcore", "size: null", "size: must be an integer or a string (got None)"),
    ],
)
def test_config_values_are_checked_against_the_field_types(tmp_path: Path, method: str, text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(UsageError) as error:
        load_config(METHODS[method].config, path, method)
    assert str(error.value) == f"--config {path}: {needle}"


def test_config_values_of_a_wider_type_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("lr: 1\nnoise_std: 2\npatience: null\ntextures: /data/dtd\n")
    assert load_config(METHODS["simplenet"].config, path, "simplenet") == {
        "lr": 1,
        "noise_std": 2,
        "patience": None,
        "textures": "/data/dtd",
    }


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_size_too_small_for_the_smoothing_is_refused_up_front(method: str) -> None:
    with pytest.raises(ValueError, match=r"size 16: each side must be ≥ 17 .*smoothing"):
        METHODS[method].config(size=16)


def test_export_with_a_sign_key_writes_a_bundle_a_line_with_trust_runs(tmp_path: Path, write_images, capsys) -> None:
    from edge.bundle import load_bundle
    from edge.cli import keys_main
    from edge.trust import read_history

    assert keys_main(["--sign", str(tmp_path / "trusted"), "maker"]) == 0
    write_images(tmp_path / "good", 6, size=(80, 72))
    out = tmp_path / "bundle"
    args = ["--method", "patchcore", "--data", str(tmp_path / "good"), "--out", str(out), "--size", "64"]
    code, stderr = run_cli(
        capsys, *args, "--coreset-ratio", "0.05", "--sign-key", str(tmp_path / "trusted" / "maker.ed25519")
    )
    assert code == 0, stderr
    (entry,) = read_history(out)
    assert (entry.action, entry.signer, entry.tool, entry.previous) == ("export", "maker", "export-engine", None)
    assert sorted(entry.files) == ["bundle.yaml", "model.onnx"]
    assert load_bundle(out, trusted_keys=tmp_path / "trusted").method == "patchcore"


def test_an_unreadable_sign_key_is_refused_before_training(tmp_path: Path, write_images, capsys) -> None:
    write_images(tmp_path / "good", 6, size=(80, 72))
    (tmp_path / "key.ed25519").write_text("not a key")
    args = ["--method", "patchcore", "--data", str(tmp_path / "good"), "--out", str(tmp_path / "bundle")]
    code, stderr = run_cli(capsys, *args, "--sign-key", str(tmp_path / "key.ed25519"))
    assert code == 2 and "key.ed25519: not an unencrypted PEM private key" in stderr, stderr
    assert not (tmp_path / "bundle").exists()
