"""The training job's stages, in the order `python -m lnet_anet_tf.train` runs them."""

STAGE_NAMES = (
    "pretrain_lnet",
    "pretrain_anet",
    "finetune_lnet_o",
    "finetune_lnet_s",
    "finetune_anet",
    "fit_svm",
    "evaluate",
    "export",
)
