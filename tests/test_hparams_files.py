"""Hyperparameters land in hparams.json and Lightning's hparams.yaml."""

from __future__ import annotations

import json
from pathlib import Path

from ftrain.loggers import CSVLogger


def test_hparams_are_written_as_json_and_yaml(tmp_path: Path) -> None:
    """log_hyperparams writes both files; the YAML holds JSON scalars, nested by indent."""
    logger = CSVLogger(str(tmp_path))
    params = {"lr": 0.1, "name": "a: b", "nested": {"layers": [1, 2], "dropout": None, "bn": True}}
    logger.log_hyperparams(params)
    logger.finalize("success")
    log_dir = Path(logger.log_dir)
    assert json.loads((log_dir / "hparams.json").read_text()) == params
    expected = '"lr": 0.1\n"name": "a: b"\n"nested":\n  "layers": [1, 2]\n  "dropout": null\n  "bn": true\n'
    assert (log_dir / "hparams.yaml").read_text() == expected
