"""``acmil serve`` argument handling (the server itself is exercised in test_service_server.py)."""

from __future__ import annotations

import re
from pathlib import Path

from acmil.cli import main as acmil_main
from acmil.service.cli import build_parser, settings_from_args

REPO = Path(__file__).resolve().parents[2]


def test_serve_help_lists_the_documented_flags(capsys):
    assert acmil_main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--checkpoint", "--slides", "--features", "--host", "--port", "--api-key-env", "--cors-origin"):
        assert flag in out


def test_missing_inputs_fail_with_one_clear_line(capsys, service_data, tmp_path):
    assert acmil_main(["serve", "--checkpoint", str(tmp_path / "none.ckpt"), "--features", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("acmil serve: error:") and "none.ckpt: checkpoint not found" in err and "\n" not in err
    args = ["serve", "--checkpoint", str(service_data["checkpoint"]), "--features", str(tmp_path / "nope")]
    assert acmil_main(args) == 1
    assert "features folder not found" in capsys.readouterr().err


def test_api_key_comes_from_the_named_environment_variable(service_data, monkeypatch):
    base = ["--checkpoint", str(service_data["checkpoint"]), "--features", str(service_data["features"])]
    monkeypatch.delenv("ACMIL_KEY_FOR_TEST", raising=False)
    try:
        settings_from_args(build_parser().parse_args([*base, "--api-key-env", "ACMIL_KEY_FOR_TEST"]))
    except ValueError as err:
        assert "ACMIL_KEY_FOR_TEST" in str(err)
    else:
        raise AssertionError("an unset key variable must be an error, not an open server")
    monkeypatch.setenv("ACMIL_KEY_FOR_TEST", "abc")
    settings = settings_from_args(
        build_parser().parse_args(
            [*base, "--api-key-env", "ACMIL_KEY_FOR_TEST", "--cors-origin", "http://a", "--cors-origin", "http://b"]
        )
    )
    assert settings.api_key.get_secret_value() == "abc" and settings.cors_origins == ["http://a", "http://b"]
    monkeypatch.delenv("ACMIL_CORS_ORIGINS", raising=False)
    assert settings_from_args(build_parser().parse_args(base)).cors_origins == []  # CORS off by default


def test_settings_not_on_the_command_line_come_from_the_environment(service_data, monkeypatch):
    base = ["--checkpoint", str(service_data["checkpoint"]), "--features", str(service_data["features"])]
    monkeypatch.setenv("ACMIL_API_KEY", "from-env")
    monkeypatch.setenv("ACMIL_VIEWER_ASSETS_DIR", "/opt/viewer")
    settings = settings_from_args(build_parser().parse_args(base))
    assert settings.api_key.get_secret_value() == "from-env"  # a container's key is not dropped
    assert str(settings.viewer_assets_dir) == "/opt/viewer" and settings.device == "cpu"


def test_only_the_serve_command_imports_the_service():
    pattern = re.compile(r"^\s*(from|import)\s+acmil\.service", re.M)
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("acmil", "models", "preprocessing")
        for path in (REPO / folder).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    service_sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "service").rglob("*.py"))
    # slide jobs use the one preprocessing API (DESIGN.md), nothing else of preprocessing
    assert not re.search(
        r"^\s*(from|import)\s+acmil\.(training|analysis|preprocessing(?!\.api\b))", service_sources, re.M
    )


def test_a_cuda_device_without_cuda_is_a_clear_error(make_settings):
    import pytest
    import torch
    from fastapi.testclient import TestClient

    from acmil.service.main import create_app

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        with TestClient(create_app(make_settings(device="cuda"))):
            pass


def test_serve_and_worker_options_round_trip_through_a_config_file(capsys, service_data, tmp_path):
    """The acmil.command shape: --print_config writes YAML that --config reads back to the same options."""
    import pytest

    from acmil.command import config_from
    from acmil.service.cli import serve_config
    from acmil.service.jobs_cli import WorkerConfig, build_worker_parser

    argv = ["--checkpoint", str(service_data["checkpoint"]), "--features", str(service_data["features"])]
    argv += ["--port", "8123", "--no-embedded-worker", "--cors-origin", "http://a", "--max-slide-gb", "2"]
    given = serve_config(build_parser().parse_args(argv))
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--print_config"])
    (tmp_path / "serve.yaml").write_text(capsys.readouterr().out)
    again = serve_config(build_parser().parse_args(["--config", str(tmp_path / "serve.yaml")]))
    assert again == given and again.port == 8123 and again.embedded_worker is False
    assert again.checkpoint == [service_data["checkpoint"]] and again.cors_origin == ["http://a"]
    (tmp_path / "worker.yaml").write_text("queue: redis://h:6379/0\ndevice: cuda:1\n")
    worker = config_from(build_worker_parser().parse_args(["--config", str(tmp_path / "worker.yaml")]), WorkerConfig)
    assert worker == WorkerConfig(queue="redis://h:6379/0", device="cuda:1")
