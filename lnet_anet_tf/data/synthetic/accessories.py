"""Accessories: neckline, necklace, shirt collar and necktie, glasses, hats, earrings."""

from __future__ import annotations

import math

from PIL import ImageDraw

from lnet_anet_tf.data.synthetic.paint import ellipse_box, shade

_SHIRT = (236, 236, 240)
_LENS_DARK = (25, 25, 32, 235)
_LENS_GLINT = (255, 255, 255, 45)


def _stroke(unit: float, fraction: float) -> int:
    return max(1, int(round(unit * fraction)))


def draw_neckline(draw: ImageDraw.ImageDraw, layout, identity, appearance) -> None:
    """Cut the neckline into the clothing and draw what lies on it."""
    u, cx, top = layout.unit, layout.cx, layout.shoulder_y
    neck = layout.neck_half_width
    skin = shade(identity.skin, 0.9)

    if appearance.neckline == "crew":
        draw.chord(ellipse_box(cx, top - 0.1 * u, neck * 1.15, 0.3 * u), 0, 180, fill=skin)
    elif appearance.neckline == "v":
        draw.polygon([(cx - neck * 1.3, top - 0.1 * u), (cx + neck * 1.3, top - 0.1 * u), (cx, top + 1.1 * u)], fill=skin)
    elif appearance.neckline == "scoop":
        draw.chord(ellipse_box(cx, top - 0.1 * u, 1.0 * u, 0.8 * u), 0, 180, fill=skin)
    else:
        _draw_collar(draw, layout, appearance)

    if appearance.necklace:
        _draw_necklace(draw, layout, appearance)


def _draw_collar(draw, layout, appearance) -> None:
    u, cx, top = layout.unit, layout.cx, layout.shoulder_y
    neck = layout.neck_half_width
    draw.polygon([(cx - neck * 1.6, top - 0.1 * u), (cx + neck * 1.6, top - 0.1 * u), (cx, top + 1.8 * u)], fill=_SHIRT)
    if appearance.necktie:
        _draw_tie(draw, layout, appearance.tie_rgb)
    else:
        draw.polygon([(cx - neck * 0.8, top - 0.1 * u), (cx + neck * 0.8, top - 0.1 * u), (cx, top + 0.45 * u)], fill=shade((200, 160, 130), 1.0))
    outline = shade(_SHIRT, 0.7)
    for side in (-1, 1):
        wing = [
            (cx + side * neck * 1.15, top - 0.3 * u),
            (cx + side * neck * 1.7, top + 0.25 * u),
            (cx + side * 0.12 * u, top + 0.3 * u),
        ]
        draw.polygon(wing, fill=_SHIRT, outline=outline)


def _draw_tie(draw, layout, colour) -> None:
    u, cx, top = layout.unit, layout.cx, layout.shoulder_y
    knot = [(cx - 0.16 * u, top), (cx + 0.16 * u, top), (cx + 0.1 * u, top + 0.3 * u), (cx - 0.1 * u, top + 0.3 * u)]
    blade = [
        (cx - 0.1 * u, top + 0.3 * u),
        (cx + 0.1 * u, top + 0.3 * u),
        (cx + 0.26 * u, top + 2.1 * u),
        (cx, top + 2.4 * u),
        (cx - 0.26 * u, top + 2.1 * u),
    ]
    draw.polygon(blade, fill=colour)
    draw.polygon(knot, fill=shade(colour, 0.8))
    stripe = shade(colour, 1.5)
    for k in range(4):
        y = top + (0.6 + 0.4 * k) * u
        draw.line([(cx - 0.16 * u, y), (cx + 0.16 * u, y - 0.2 * u)], fill=stripe, width=_stroke(u, 0.05))


def _draw_necklace(draw, layout, appearance) -> None:
    u, cx, top = layout.unit, layout.cx, layout.shoulder_y
    half_width = layout.neck_half_width * 1.2
    depth = 0.6 * u
    colour = appearance.necklace_rgb
    points = [
        (cx + half_width * math.cos(math.pi * k / 14), top - 0.15 * u + depth * math.sin(math.pi * k / 14))
        for k in range(15)
    ]
    draw.line(points, fill=shade(colour, 0.8), width=_stroke(u, 0.06))
    for x, y in points[1:-1]:
        draw.ellipse(ellipse_box(x, y, 0.065 * u, 0.065 * u), fill=colour, outline=shade(colour, 0.6))
    pendant_x, pendant_y = points[7]
    draw.ellipse(ellipse_box(pendant_x, pendant_y + 0.15 * u, 0.13 * u, 0.15 * u), fill=colour, outline=shade(colour, 0.55))


def draw_glasses(draw: ImageDraw.ImageDraw, layout, identity, appearance) -> None:
    u = layout.unit
    frame = identity.glasses_frame
    width = _stroke(u, 0.08)
    lens_y = layout.eye_y + 0.02 * u
    boxes = []
    for index, (ex, _) in enumerate(layout.eyes):
        half_width = 0.33 * u * (layout.eye_half_widths[index] / max(layout.eye_half_widths))
        half_height = 0.3 * u if identity.glasses_round else 0.23 * u
        box = ellipse_box(ex, lens_y, half_width, half_height)
        boxes.append(box)
        fill = _LENS_DARK if appearance.sunglasses else _LENS_GLINT
        if identity.glasses_round:
            draw.ellipse(box, fill=fill, outline=frame, width=width)
        else:
            draw.rounded_rectangle(box, radius=0.1 * u, fill=fill, outline=frame, width=width)
    bridge_y = lens_y - 0.08 * u
    draw.line([(boxes[0][2], bridge_y), (boxes[1][0], bridge_y)], fill=frame, width=width)
    draw.line([(boxes[0][0], bridge_y), (layout.cx - layout.half_width, bridge_y - 0.05 * u)], fill=frame, width=width)
    draw.line([(boxes[1][2], bridge_y), (layout.cx + layout.half_width, bridge_y - 0.05 * u)], fill=frame, width=width)


def draw_hat(draw: ImageDraw.ImageDraw, layout, identity, appearance) -> None:
    """Draw a cap, a beanie or a fedora over the top of the head."""
    u, cx, a = layout.unit, layout.cx, layout.half_width
    colour = appearance.hat_rgb
    dark = shade(colour, 0.7)
    top = layout.head_cy - layout.half_height
    rim = layout.eye_y - 0.95 * u

    if appearance.hat_style == "cap":
        draw.chord((cx - a - 0.14 * u, top - 0.25 * u, cx + a + 0.14 * u, rim + (rim - top) + 0.25 * u), 180, 360, fill=colour)
        draw.chord((cx - a * 0.95, rim - 0.15 * u, cx + a * 0.95, rim + 0.35 * u), 0, 180, fill=dark)
        draw.ellipse(ellipse_box(cx, top - 0.2 * u, 0.08 * u, 0.06 * u), fill=dark)
        draw.line([(cx, top - 0.2 * u), (cx, rim)], fill=dark, width=_stroke(u, 0.04))
    elif appearance.hat_style == "beanie":
        rim = layout.eye_y - 0.8 * u
        draw.chord((cx - a - 0.12 * u, top - 0.35 * u, cx + a + 0.12 * u, rim + (rim - top) + 0.35 * u), 180, 360, fill=colour)
        draw.rectangle((cx - a - 0.14 * u, rim - 0.32 * u, cx + a + 0.14 * u, rim), fill=dark)
        for k in range(-4, 5):
            x = cx + k * 0.22 * u
            draw.line([(x, rim - 0.3 * u), (x, rim - 0.02 * u)], fill=shade(colour, 0.5), width=_stroke(u, 0.04))
    else:
        crown_top = top - 0.45 * u
        crown = [
            (cx - a * 0.85, rim),
            (cx - a * 0.75, crown_top + 0.1 * u),
            (cx, crown_top + 0.25 * u),
            (cx + a * 0.75, crown_top + 0.1 * u),
            (cx + a * 0.85, rim),
        ]
        draw.polygon(crown, fill=colour)
        draw.rectangle((cx - a * 0.84, rim - 0.3 * u, cx + a * 0.84, rim - 0.1 * u), fill=shade(colour, 0.45))
        draw.ellipse(ellipse_box(cx, rim, a + 0.6 * u, 0.2 * u), fill=dark)


def draw_earrings(draw: ImageDraw.ImageDraw, layout, appearance) -> None:
    u = layout.unit
    colour = appearance.earring_rgb
    outline = shade(colour, 0.55)
    for x in layout.ear_x:
        y = layout.ear_bottom
        if appearance.earring_hoops:
            draw.ellipse(ellipse_box(x, y + 0.2 * u, 0.18 * u, 0.2 * u), outline=colour, width=_stroke(u, 0.07))
        else:
            draw.ellipse(ellipse_box(x, y, 0.06 * u, 0.06 * u), fill=colour)
            draw.line([(x, y), (x, y + 0.25 * u)], fill=outline, width=_stroke(u, 0.04))
            draw.ellipse(ellipse_box(x, y + 0.35 * u, 0.11 * u, 0.14 * u), fill=colour, outline=outline)


