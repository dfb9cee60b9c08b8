"""Render the evaluation results as a Markdown report, one row per attribute."""

from __future__ import annotations

from lnet_anet_tf import attributes
from lnet_anet_tf import published


def _percent(value) -> str:
    return "n/a" if value is None else f"{100.0 * value:.2f}"


def _fraction(value) -> str:
    # Results written before ROC AUC was measured lack it.
    return "n/a" if value is None else f"{value:.3f}"


def render(document: dict) -> str:
    """Return the report for `evaluate.write_results`' document."""
    is_celeba = document["dataset"] == "celeba"
    label = "CelebA" if is_celeba else "synthetic (the embedded generated dataset, not CelebA)"
    attribute_results = document["attributes"]
    lines = [
        "# Evaluation report",
        "",
        f"- Dataset: {label}",
        f"- Preset: {document['preset']}",
        f"- Test images: {document['num_test_images']}",
        f"- Cascade time per image (batch 1, this machine): {document['seconds_per_image'] * 1000:.1f} ms",
        "",
        "## Summary",
        "",
        "| measure | cascade | majority | pixels + logistic regression | centre box |",
        "| --- | --- | --- | --- | --- |",
    ]
    baselines = document.get("baselines", {})
    majority = baselines.get("majority", {})
    pixels = baselines.get("pixel_logistic_regression", {})
    centre = baselines.get("centre_box", {})
    lines.append(
        f"| mean accuracy (%) | {_percent(attribute_results['mean_accuracy'])} | "
        f"{_percent(majority.get('mean_accuracy'))} | {_percent(pixels.get('mean_accuracy'))} | |"
    )
    lines.append(
        f"| mean balanced accuracy (%) | {_percent(attribute_results['mean_balanced_accuracy'])} | "
        f"{_percent(majority.get('mean_balanced_accuracy'))} | "
        f"{_percent(pixels.get('mean_balanced_accuracy'))} | |"
    )
    lines.append(
        f"| mean ROC AUC | {_fraction(attribute_results.get('mean_roc_auc'))} | "
        f"{_fraction(majority.get('mean_roc_auc'))} | "
        f"{_fraction(pixels.get('mean_roc_auc'))} | |"
    )
    at_boxes = document.get("attributes_at_annotated_boxes")
    if at_boxes:
        for key, measure in (
            ("mean_accuracy", "mean accuracy"),
            ("mean_balanced_accuracy", "mean balanced accuracy"),
        ):
            lines.append(
                f"| {measure}, ANet on the annotated face boxes (%) | {_percent(at_boxes[key])} | | | |"
            )
    localization = document.get("localization", {})
    for net in ("lnet_o", "lnet_s"):
        if net in localization:
            lines.append(
                f"| {net} recall at IoU >= 0.5 (%) | {_percent(localization[net]['recall'])} "
                f"| | | {_percent(centre.get('recall'))} |"
            )
    if "unavailable" in localization:
        lines += ["", f"Localization was not evaluated: {localization['unavailable']}."]
    if is_celeba:
        lines += [
            "",
            f"Published mean accuracy of LNets+ANet on CelebA: {published.CELEBA_MEAN_ACCURACY}% "
            "(Liu et al., ICCV 2015, Table 1).",
        ]

    if at_boxes:
        lines += [
            "",
            "The rows on the annotated face boxes score ANet and the SVMs on the test "
            "images' labelled face boxes instead of LNet_s's: the difference from the "
            "cascade's row is what localization errors cost.",
        ]

    lines += _attribute_table(attribute_results, is_celeba, at_boxes)
    lines += _histogram_table(localization)
    return "\n".join(lines) + "\n"


def _attribute_table(attribute_results: dict, is_celeba: bool, at_boxes: dict | None) -> list:
    header = "| attribute | positive rate (%) | accuracy (%) | balanced accuracy (%) | ROC AUC |"
    rule = "| --- | --- | --- | --- | --- |"
    if at_boxes:
        header += " accuracy on annotated boxes (%) |"
        rule += " --- |"
    if is_celeba:
        header += " published accuracy (%) |"
        rule += " --- |"
    lines = ["", "## Per attribute", "", header, rule]
    for name in attributes.ATTRIBUTE_NAMES:
        entry = attribute_results["per_attribute"][name]
        row = (
            f"| {name} | {_percent(entry['positive_rate'])} | {_percent(entry['accuracy'])} "
            f"| {_percent(entry['balanced_accuracy'])} | {_fraction(entry.get('roc_auc'))} |"
        )
        if at_boxes:
            row += f" {_percent(at_boxes['per_attribute'][name]['accuracy'])} |"
        if is_celeba:
            row += f" {published.CELEBA_ACCURACY[name]} |"
        lines.append(row)
    return lines


def _histogram_table(localization: dict) -> list:
    nets = [net for net in ("lnet_o", "lnet_s") if net in localization]
    if not nets:
        return []
    edges = localization[nets[0]]["iou_histogram"]["bin_edges"]
    lines = [
        "",
        "## IoU histogram (images per bin)",
        "",
        "| IoU | " + " | ".join(nets) + " |",
        "| --- | " + " | ".join("---" for _ in nets) + " |",
    ]
    for index in range(len(edges) - 1):
        counts = [str(localization[net]["iou_histogram"]["counts"][index]) for net in nets]
        lines.append(f"| {edges[index]:.1f}-{edges[index + 1]:.1f} | " + " | ".join(counts) + " |")
    return lines + _box_shape_table(localization, nets)


def _box_shape_table(localization: dict, nets: list) -> list:
    # Reports written before these measures existed lack them; leave the table out.
    if any("centre_inside" not in localization[net] for net in nets):
        return []
    lines = [
        "",
        "## Box placement and size",
        "",
        "| net | mean IoU | contains the true centre (%) | contains the true box (%) | median area / true area |",
        "| --- | --- | --- | --- | --- |",
    ]
    for net in nets:
        values = localization[net]
        lines.append(
            f"| {net} | {values['mean_iou']:.3f} | {_percent(values['centre_inside'])} "
            f"| {_percent(values['true_box_inside'])} | {values['median_area_ratio']:.2f} |"
        )
    return lines
