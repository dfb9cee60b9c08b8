"""Tests of scripts/pretraining_ablation.py: reusing the LNet stages of another variant."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "scripts"))

import pretraining_ablation  # noqa: E402


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_copy_lnet_stages_selects_lnet_stages(tmp_path):
    source = tmp_path / "both"
    for stage in ("pretrain_lnet", "pretrain_anet", "finetune_lnet_o", "finetune_lnet_s",
                  "finetune_anet", "evaluate"):
        write(source / stage / "DONE.json", stage)
    write(source / "config.json", "config")
    write(source / "run_info.json", "run info")
    target = tmp_path / "no_anet_pretraining"

    copied = pretraining_ablation.copy_lnet_stages(str(source), str(target))

    assert copied == ["pretrain_lnet", "finetune_lnet_o", "finetune_lnet_s"]
    assert sorted(os.listdir(target)) == sorted(copied + ["config.json", "run_info.json"])
    assert (target / "finetune_lnet_s" / "DONE.json").read_text(encoding="utf-8") == "finetune_lnet_s"
    assert (target / "config.json").read_text(encoding="utf-8") == "config"


def test_copy_lnet_stages_keeps_existing(tmp_path):
    # A variant without LNet pre-training has no pretrain_lnet folder to copy, and
    # a stage that the target already contains (from an earlier run) stays as it is.
    source = tmp_path / "no_lnet_pretraining"
    write(source / "finetune_lnet_o" / "DONE.json", "source lnet_o")
    write(source / "finetune_lnet_s" / "DONE.json", "source lnet_s")
    target = tmp_path / "neither"
    write(target / "finetune_lnet_o" / "DONE.json", "target lnet_o")
    write(target / "finetune_lnet_s.copying" / "partial", "left by a killed copy")

    copied = pretraining_ablation.copy_lnet_stages(str(source), str(target))

    assert copied == ["finetune_lnet_s"]
    assert (target / "finetune_lnet_o" / "DONE.json").read_text(encoding="utf-8") == "target lnet_o"
    assert (target / "finetune_lnet_s" / "DONE.json").read_text(encoding="utf-8") == "source lnet_s"
    assert not os.path.exists(target / "finetune_lnet_s.copying")
    assert not os.path.exists(target / "pretrain_lnet")
