"""The face: skin, ears, eyes, eyebrows, nose, mouth, cheeks, age cues and beards.

Sizes are multiples of `layout.unit` (the distance between the eyes). They are
chosen so that each attribute still shows when the face box is scaled to 48 x 48
pixels, where one unit is about 20 pixels: no stroke is thinner than 0.05 units.
"""

from __future__ import annotations

import math

from PIL import ImageDraw

from lnet_anet_tf.data.synthetic import rates
from lnet_anet_tf.data.synthetic.paint import curve, ellipse_box, mix, ribbon, shade, with_alpha

_SCLERA = (242, 240, 236)
_NATURAL_LIP = (190, 90, 95)
_BLUSH = (230, 60, 95)
_TEETH = (246, 244, 236)
_MOUTH_INSIDE = (70, 20, 28)


def _stroke(unit: float, fraction: float) -> int:
    return max(1, int(round(unit * fraction)))


def draw_ears(draw: ImageDraw.ImageDraw, layout, identity) -> None:
    u = layout.unit
    height = 0.5 * (layout.ear_bottom - layout.ear_top)
    centre_y = layout.ear_top + height
    for x in layout.ear_x:
        draw.ellipse(ellipse_box(x, centre_y, 0.2 * u, height), fill=shade(identity.skin, 0.92))
        draw.ellipse(ellipse_box(x, centre_y, 0.09 * u, height * 0.6), fill=shade(identity.skin, 0.78))


def draw_face(canvas, layout, identity, appearance) -> None:
    """Draw the skin of the face and every feature on it, back to front."""
    draw = canvas.draw
    skin = identity.skin
    if identity.double_chin:
        _draw_double_chin(canvas.solid, layout, skin)
    canvas.solid.polygon(layout.outline, fill=skin)
    if appearance.high_cheekbones:
        _draw_cheekbones(draw, layout, skin)
    if appearance.rosy_cheeks:
        _draw_blush(draw, layout)
    _draw_beard(draw, layout, identity)
    if not identity.young:
        _draw_wrinkles(draw, layout, skin, appearance)
    for index in (0, 1):
        _draw_eye(draw, layout, identity, appearance, index)
        _draw_brow(draw, layout, identity, appearance, index)
    _draw_nose(draw, layout, identity)
    _draw_mouth(draw, layout, identity, appearance)
    if "mustache" in _beard_parts(identity.beard):
        _draw_mustache(draw, layout, identity)


def _draw_double_chin(draw, layout, skin) -> None:
    u = layout.unit
    draw.ellipse(
        ellipse_box(layout.cx, layout.chin_y + 0.02 * u, 0.62 * u, 0.32 * u), fill=shade(skin, 0.95)
    )
    draw.arc(
        ellipse_box(layout.cx, layout.chin_y + 0.02 * u, 0.62 * u, 0.32 * u),
        20,
        160,
        fill=shade(skin, 0.62),
        width=_stroke(u, 0.07),
    )


def _draw_cheekbones(draw, layout, skin) -> None:
    # A highlight on the cheekbone and a hollow below it.
    u = layout.unit
    for side, (ex, ey) in zip((-1, 1), layout.eyes):
        x = ex + side * 0.12 * u
        draw.ellipse(ellipse_box(x, ey + 0.42 * u, 0.28 * u, 0.13 * u), fill=shade(skin, 1.3, 170))
        hollow = [
            (ex + side * 0.45 * u, ey + 0.52 * u),
            (ex + side * 0.12 * u, ey + 0.8 * u),
            (ex + side * 0.05 * u, ey + 0.88 * u),
            (ex + side * 0.42 * u, ey + 0.68 * u),
        ]
        draw.polygon(hollow, fill=shade(skin, 0.6, 120))


def _draw_blush(draw, layout) -> None:
    u = layout.unit
    for side, (ex, ey) in zip((-1, 1), layout.eyes):
        draw.ellipse(ellipse_box(ex + side * 0.08 * u, ey + 0.6 * u, 0.3 * u, 0.2 * u), fill=with_alpha(_BLUSH, 170))


def _draw_wrinkles(draw, layout, skin, appearance) -> None:
    u, cx = layout.unit, layout.cx
    colour = shade(skin, 0.62, 200)
    width = _stroke(u, 0.05)
    if not appearance.hat:
        for row in range(3):
            y = layout.eye_y - (0.7 + 0.14 * row) * u
            draw.arc(ellipse_box(cx, y + 0.3 * u, 0.5 * u, 0.3 * u), 200, 340, fill=colour, width=width)
    for side, (ex, ey) in zip((-1, 1), layout.eyes):
        corner = ex + side * (layout.eye_half_widths[0] + 0.05 * u)
        for slope in (-0.12, 0.0, 0.12):
            draw.line([(corner, ey), (corner + side * 0.2 * u, ey + slope * u)], fill=colour, width=width)
        nose_side = layout.nose_tip[0] + side * 0.28 * u
        fold = [
            (nose_side, layout.nose_tip[1] - 0.05 * u),
            (nose_side + side * 0.14 * u, layout.mouth_y - 0.1 * u),
            (layout.mouth_corners[0 if side < 0 else 1][0] + side * 0.08 * u, layout.mouth_y + 0.2 * u),
        ]
        draw.line(fold, fill=colour, width=width, joint="curve")


def _draw_eye(draw, layout, identity, appearance, index: int) -> None:
    u = layout.unit
    ex, ey = layout.eyes[index]
    hw = layout.eye_half_widths[index]
    hh = layout.eye_half_height
    outward = -1 if index == 0 else 1

    if identity.bags_under_eyes:
        draw.ellipse(ellipse_box(ex, ey + hh + 0.08 * u, hw * 0.95, 0.13 * u), fill=(80, 45, 70, 90))
        draw.arc(
            ellipse_box(ex, ey + 0.02 * u, hw * 1.0, hh + 0.2 * u),
            25,
            155,
            fill=shade(identity.skin, 0.55),
            width=_stroke(u, 0.05),
        )
    if appearance.heavy_makeup:
        draw.ellipse(
            ellipse_box(ex, ey - hh * 0.6 - 0.08 * u, hw * 1.15, hh * 0.6 + 0.14 * u),
            fill=with_alpha(appearance.eyeshadow_rgb, 190),
        )

    draw.ellipse(ellipse_box(ex, ey, hw, hh), fill=_SCLERA)
    iris = min(hh * 1.05, 0.105 * u)
    iris_x = ex + 0.04 * u * appearance.yaw
    draw.ellipse(ellipse_box(iris_x, ey, iris, iris), fill=identity.eye_colour)
    draw.ellipse(ellipse_box(iris_x, ey, iris * 0.45, iris * 0.45), fill=(10, 10, 12))

    lid = (25, 18, 18)
    liner = 0.1 if appearance.heavy_makeup else 0.055
    draw.arc(ellipse_box(ex, ey, hw, hh), 180, 360, fill=lid, width=_stroke(u, liner))
    if appearance.heavy_makeup:
        draw.line(
            [(ex + outward * hw, ey), (ex + outward * (hw + 0.12 * u), ey - 0.1 * u)],
            fill=lid,
            width=_stroke(u, 0.06),
        )
    if appearance.narrow_eyes:
        draw.arc(ellipse_box(ex, ey, hw, hh), 0, 180, fill=shade(identity.skin, 0.5), width=_stroke(u, 0.05))


def _brow_colour(identity, appearance) -> tuple:
    if identity.hair_colour in ("blond", "gray"):
        colour = shade(identity.hair_rgb, 0.62)
    else:
        colour = shade(identity.hair_rgb, 0.8)
    if appearance.heavy_makeup:
        colour = shade(colour, 0.75)
    return colour


def _draw_brow(draw, layout, identity, appearance, index: int) -> None:
    u = layout.unit
    ex, _ = layout.eyes[index]
    outward = -1 if index == 0 else 1
    inner_x = ex - outward * 0.26 * u
    length = 0.6 * u * (1.1 if identity.bushy_brows else 1.0)
    base_y = layout.brow_y

    def point(t: float) -> tuple:
        if identity.arched_brows:
            # A peak two thirds of the way out, with straight flanks.
            lift = 0.2 * u * (1.0 - abs(t - 0.62) / 0.62)
        else:
            lift = 0.06 * u * math.sin(math.pi * t)
        return (inner_x + outward * length * t, base_y - lift)

    points = curve(point, 0.0, 1.0, 9)
    if identity.bushy_brows:
        widths = [0.085 * u] * len(points)
    else:
        widths = [0.045 * u * (1.0 - 0.5 * i / (len(points) - 1)) for i in range(len(points))]
    draw.polygon(ribbon(points, widths), fill=_brow_colour(identity, appearance))


def _draw_nose(draw, layout, identity) -> None:
    u = layout.unit
    nx, ny = layout.nose_tip
    skin = identity.skin
    line = shade(skin, 0.62)
    side = -1 if layout.feature_dx > 0 else 1
    width = _stroke(u, 0.05)

    if identity.nose in ("big", "big_pointy"):
        for s in (-1, 1):
            draw.ellipse(ellipse_box(nx + s * 0.24 * u, ny - 0.03 * u, 0.13 * u, 0.11 * u), fill=shade(skin, 0.86), outline=line, width=width)
            draw.line([(nx + s * 0.13 * u, layout.eye_y), (nx + s * 0.2 * u, ny - 0.15 * u)], fill=line, width=width)
        tip = ellipse_box(nx, ny - 0.05 * u, 0.18 * u, 0.14 * u)
        draw.ellipse(tip, fill=shade(skin, 0.95), outline=line, width=width)
        for s in (-1, 1):
            draw.ellipse(ellipse_box(nx + s * 0.13 * u, ny + 0.06 * u, 0.075 * u, 0.045 * u), fill=shade(skin, 0.35))
        if identity.nose == "big_pointy":
            draw.polygon([(nx - 0.1 * u, ny), (nx + 0.1 * u, ny), (nx, ny + 0.1 * u)], fill=shade(skin, 0.8))
        return

    if identity.nose == "pointy":
        draw.line([(nx, layout.eye_y), (nx, ny - 0.15 * u)], fill=shade(skin, 1.18), width=_stroke(u, 0.07))
        draw.polygon(
            [(nx - 0.13 * u, ny - 0.2 * u), (nx + 0.13 * u, ny - 0.2 * u), (nx, ny + 0.05 * u)],
            fill=shade(skin, 0.8),
            outline=line,
        )
        for s in (-1, 1):
            draw.line([(nx + s * 0.06 * u, layout.eye_y + 0.05 * u), (nx + s * 0.13 * u, ny - 0.2 * u)], fill=line, width=width)
            draw.ellipse(ellipse_box(nx + s * 0.08 * u, ny + 0.02 * u, 0.04 * u, 0.025 * u), fill=shade(skin, 0.4))
        return

    draw.line([(nx + side * 0.1 * u, layout.eye_y + 0.05 * u), (nx + side * 0.17 * u, ny - 0.1 * u)], fill=line, width=width)
    draw.arc(ellipse_box(nx, ny - 0.06 * u, 0.19 * u, 0.11 * u), 10, 170, fill=line, width=width)
    for s in (-1, 1):
        draw.ellipse(ellipse_box(nx + s * 0.1 * u, ny + 0.02 * u, 0.05 * u, 0.03 * u), fill=shade(skin, 0.4))


def _lip_colour(identity, appearance) -> tuple:
    if appearance.lipstick:
        return appearance.lipstick_rgb
    return mix(identity.skin, _NATURAL_LIP, 0.45 if identity.male else 0.6)


def _draw_mouth(draw, layout, identity, appearance) -> None:
    """Draw the lips along a seam from corner to corner, with the mouth opening."""
    u = layout.unit
    (lx, ly), (rx, ry) = layout.mouth_corners
    mx, half = 0.5 * (lx + rx), 0.5 * (rx - lx)
    upper = (0.15 if identity.big_lips else 0.085) * u
    lower = (0.2 if identity.big_lips else 0.11) * u
    # A smile curves the seam down in the middle, relative to the raised corners.
    smile_drop = 0.1 * u if appearance.smiling else 0.015 * u
    if appearance.mouth_open:
        gap = (0.24 if appearance.smiling else 0.15) * u
    else:
        gap = 0.0

    upper_top, upper_bottom, lower_top, lower_bottom, gaps = [], [], [], [], []
    for i in range(17):
        t = -1.0 + 2.0 * i / 16
        x = mx + half * t
        seam = ly + smile_drop * (1.0 - t * t)
        thickness = max(0.0, 1.0 - t * t) ** 0.6
        # The cupid's bow: the upper lip rises a little on both sides of the middle.
        bow = 0.35 * math.exp(-(((abs(t) - 0.25) / 0.2) ** 2)) - 0.35
        opening = gap * thickness
        gaps.append(opening)
        upper_top.append((x, seam - opening / 2 - upper * thickness * (1.0 + bow)))
        upper_bottom.append((x, seam - opening / 2))
        lower_top.append((x, seam + opening / 2))
        lower_bottom.append((x, seam + opening / 2 + lower * thickness))

    lip = _lip_colour(identity, appearance)
    if gap > 0:
        draw.polygon(upper_bottom + lower_top[::-1], fill=_MOUTH_INSIDE)
        if appearance.smiling:
            teeth = [(x, y + 0.55 * opening) for (x, y), opening in zip(upper_bottom, gaps)]
            draw.polygon(upper_bottom + teeth[::-1], fill=_TEETH)
    draw.polygon(upper_top + upper_bottom[::-1], fill=shade(lip, 0.9))
    draw.polygon(lower_top + lower_bottom[::-1], fill=lip)
    draw.line(upper_bottom, fill=shade(lip, 0.45), width=_stroke(u, 0.04))
    if appearance.smiling:
        # Smile lines curving around the corners of the mouth.
        line = shade(identity.skin, 0.6)
        width = _stroke(u, 0.04)
        draw.arc(ellipse_box(lx - 0.03 * u, ly + 0.02 * u, 0.07 * u, 0.1 * u), 90, 270, fill=line, width=width)
        draw.arc(ellipse_box(rx + 0.03 * u, ry + 0.02 * u, 0.07 * u, 0.1 * u), 270, 90, fill=line, width=width)


def _beard_parts(style: str) -> set:
    labels = set(rates.BEARD_STYLES[style][1])
    parts = set()
    if "5_o_Clock_Shadow" in labels:
        parts.add("stubble")
    if style in ("stubble_beard", "jaw_beard", "full_beard"):
        parts.add("jaw")
    parts.update(label.lower() for label in labels if label in ("Goatee", "Mustache", "Sideburns"))
    return parts


def _lower_face(layout, above: float) -> list:
    return [p for p in layout.outline if p[1] > above]


def _draw_beard(draw, layout, identity) -> None:
    """Draw stubble, jaw beard, sideburns and goatee: the facial hair under the lips."""
    parts = _beard_parts(identity.beard)
    if not parts:
        return
    u, cx = layout.unit, layout.cx
    hair_rgb = identity.hair_rgb
    nx, ny = layout.nose_tip

    if "stubble" in parts:
        region = _lower_face(layout, layout.eye_y + 0.5 * u)
        region = region + [
            (layout.mouth_corners[0][0] - 0.25 * u, layout.eye_y + 0.75 * u),
            (nx - 0.25 * u, ny + 0.1 * u),
            (nx + 0.25 * u, ny + 0.1 * u),
            (layout.mouth_corners[1][0] + 0.25 * u, layout.eye_y + 0.75 * u),
        ][::-1]
        alpha = 120 if "jaw" in parts else 85
        draw.polygon(region, fill=shade(hair_rgb, 0.35, alpha))
    if "jaw" in parts:
        outer = _lower_face(layout, layout.eye_y + 0.35 * u)
        inner_centre = (cx, layout.eye_y + 0.55 * u)
        inner = [(x + (inner_centre[0] - x) * 0.22, y + (inner_centre[1] - y) * 0.22) for x, y in outer]
        draw.polygon(outer + inner[::-1], fill=with_alpha(shade(hair_rgb, 0.85), 235))
    if "sideburns" in parts:
        for side in (-1, 1):
            x = cx + side * (layout.half_width - 0.15 * u)
            draw.polygon(
                [
                    (x - 0.12 * u, layout.eye_y - 0.5 * u),
                    (x + 0.12 * u, layout.eye_y - 0.5 * u),
                    (x + 0.1 * u - side * 0.05 * u, layout.eye_y + 0.8 * u),
                    (x - 0.1 * u - side * 0.05 * u, layout.eye_y + 0.8 * u),
                ],
                fill=hair_rgb,
            )
    if "goatee" in parts:
        mx = 0.5 * (layout.mouth_corners[0][0] + layout.mouth_corners[1][0])
        chin = layout.chin_y
        points = [
            (mx - 0.3 * u, layout.mouth_y + 0.1 * u),
            (mx + 0.3 * u, layout.mouth_y + 0.1 * u),
            (mx + 0.34 * u, chin - 0.2 * u),
            (mx + 0.15 * u, chin + 0.04 * u),
            (mx - 0.15 * u, chin + 0.04 * u),
            (mx - 0.34 * u, chin - 0.2 * u),
        ]
        draw.polygon(points, fill=shade(hair_rgb, 0.9))


def _draw_mustache(draw, layout, identity) -> None:
    u = layout.unit
    (lx, ly), (rx, ry) = layout.mouth_corners
    mx = 0.5 * (lx + rx)
    top = layout.nose_tip[1] + 0.12 * u
    points = [
        (lx - 0.06 * u, ly + 0.06 * u),
        (lx + 0.1 * u, top + 0.04 * u),
        (mx, top),
        (rx - 0.1 * u, top + 0.04 * u),
        (rx + 0.06 * u, ry + 0.06 * u),
        (rx - 0.05 * u, ry - 0.03 * u),
        (mx, ly - 0.07 * u),
        (lx + 0.05 * u, ly - 0.03 * u),
    ]
    draw.polygon(points, fill=shade(identity.hair_rgb, 0.9))
