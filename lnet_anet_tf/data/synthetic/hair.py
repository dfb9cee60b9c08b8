"""Hair: the mass behind the head, the cap and fringe in front, baldness and hairlines.

Straight and wavy hair differ in two cues that survive downscaling: the outline
(smooth or rippled with a period of about half the eye distance) and the strands
drawn on the hair (straight lines or sine waves).
"""

from __future__ import annotations

import math

from PIL import ImageDraw

from lnet_anet_tf.data.synthetic.paint import curve, ellipse_box, shade, wave

# Hair thickness above the skull, in eye distances.
_VOLUME = {"short": 0.1, "straight": 0.2, "wavy": 0.32}


def _stroke(unit: float, fraction: float) -> int:
    return max(1, int(round(unit * fraction)))


def _top_arc(layout, limit_y: float, volume: float) -> list:
    """Return the head outline above `limit_y`, left side first, pushed out by `volume`."""
    outline = layout.outline
    count = len(outline)
    # Start at the bottom of the outline (a quarter turn) so that the run above
    # `limit_y` is contiguous: left side, top, right side.
    ordered = [outline[(count // 4 + i) % count] for i in range(count)]
    arc = [p for p in ordered if p[1] < limit_y]
    centre_x, centre_y = layout.cx, layout.head_cy
    expanded = []
    for x, y in arc:
        dx, dy = x - centre_x, y - centre_y
        distance = math.hypot(dx, dy) or 1.0
        expanded.append((x + dx / distance * volume, y + dy / distance * volume))
    return expanded


def _resample(points: list, spacing: float) -> list:
    """Insert points so that neighbours are at most `spacing` apart (for `wave`)."""
    result = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        steps = max(1, int(math.hypot(x1 - x0, y1 - y0) / spacing))
        result.extend((x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps) for k in range(1, steps + 1))
    return result


def draw_back_hair(draw: ImageDraw.ImageDraw, layout, identity, appearance) -> None:
    """Draw medium or long hair hanging behind the head and neck."""
    if identity.hairline == "bald" or identity.hair_length == "short":
        return
    u = layout.unit
    volume = _VOLUME[identity.hair_style]
    if identity.hair_length == "long":
        bottom, spread = layout.shoulder_y + 1.1 * u, 0.45 * u
    else:
        bottom, spread = layout.chin_y - 0.1 * u, 0.15 * u
    arc = _top_arc(layout, layout.head_cy, volume * u)
    left = (arc[0][0] - spread, bottom)
    right = (arc[-1][0] + spread, bottom)
    path = [left] + arc + [right]
    if identity.hair_style == "wavy":
        path = wave(_resample(path, 0.1 * u), 0.1 * u, 0.55 * u)
    draw.polygon(path, fill=shade(identity.hair_rgb, 0.82))


def _hairline(layout, identity, t: float) -> tuple:
    """Return the point of the forehead hairline at t in [-1, 1] (left to right)."""
    u = layout.unit
    if identity.hairline == "receding":
        # Temples recede further than the middle: an M-shaped hairline.
        y = layout.eye_y - 1.25 * u - 0.25 * u * abs(t)
    else:
        y = layout.eye_y - 1.02 * u + 0.2 * u * t * t
    # Keep the hairline inside the head: 85% of the head's half-width at that height.
    height = min(1.0, abs(y - layout.head_cy) / layout.half_height)
    x = layout.cx + t * 0.85 * layout.half_width * math.sqrt(1.0 - height * height)
    return (x, y)


def _draw_bald(canvas, layout, identity) -> None:
    # A shine on the scalp, and a fringe of hair that hugs the sides of the head
    # above and behind the ears.
    u, cx, a = layout.unit, layout.cx, layout.half_width
    canvas.draw.ellipse(
        ellipse_box(cx, layout.head_cy - 0.72 * layout.half_height, 0.45 * a, 0.14 * layout.half_height),
        fill=shade(identity.skin, 1.2, 150),
    )
    top, bottom = layout.eye_y - 0.75 * u, layout.eye_y + 0.25 * u
    for side in (-1, 1):
        band = [p for p in layout.outline if top < p[1] < bottom and (p[0] - cx) * side > 0]
        band.sort(key=lambda p: p[1])
        outer = [(x + side * 0.16 * u, y) for x, y in band]
        inner = [(x - side * 0.05 * u, y) for x, y in band]
        canvas.solid.polygon(outer + inner[::-1], fill=identity.hair_rgb)


def _draw_strands(draw, layout, identity, crown: tuple, ends: list) -> None:
    u = layout.unit
    colour = shade(identity.hair_rgb, 0.68)
    width = _stroke(u, 0.045)
    for end in ends:
        if identity.hair_style == "wavy":
            points = curve(lambda t: (crown[0] + (end[0] - crown[0]) * t, crown[1] + (end[1] - crown[1]) * t), 0.0, 1.0, 12)
            points = wave(points, 0.08 * u, 0.5 * u)
        else:
            points = [crown, end]
        draw.line(points, fill=colour, width=width)


def _draw_bangs(draw, layout, identity, top_y: float) -> list:
    u, cx = layout.unit, layout.cx
    bottom_y = layout.eye_y - 0.62 * u
    half = 0.86 * layout.half_width
    edge = [(cx + half, top_y), (cx - half, top_y)]
    teeth = 9
    for k in range(teeth + 1):
        x = cx - half + 2 * half * k / teeth
        dip = 0.0 if k % 2 == 0 else 0.07 * u
        edge.append((x, bottom_y - dip))
    if identity.hair_style == "wavy":
        edge = edge[:2] + wave(_resample(edge[2:], 0.08 * u), 0.06 * u, 0.35 * u)
    draw.polygon(edge, fill=identity.hair_rgb)
    return [(cx - half + 2 * half * k / 6, bottom_y) for k in range(7)]


def draw_front_hair(canvas, layout, identity, appearance) -> None:
    """Draw the hair on top of the head: cap, hairline, fringe and strands."""
    draw = canvas.draw
    if identity.hairline == "bald":
        _draw_bald(canvas, layout, identity)
        return
    u, cx, a = layout.unit, layout.cx, layout.half_width
    volume = _VOLUME[identity.hair_style] * u
    framing = identity.hair_length in ("medium", "long")
    side_bottom = layout.eye_y + (1.1 if framing else -0.15) * u
    side_inset = (0.2 if framing else 0.13) * u

    outer = _top_arc(layout, side_bottom, volume)
    hairline = curve(lambda t: _hairline(layout, identity, t), 1.0, -1.0, 11)
    temple_y = layout.eye_y - 0.67 * u
    inner = [
        (cx + a - side_inset, side_bottom),
        (cx + a - side_inset, temple_y),
        *hairline,
        (cx - a + side_inset, temple_y),
        (cx - a + side_inset, side_bottom),
    ]
    if identity.hair_style == "wavy":
        outer = wave(_resample(outer, 0.1 * u), 0.09 * u, 0.55 * u)
    canvas.solid.polygon(outer + inner, fill=identity.hair_rgb)

    crown = (cx + 0.25 * a, layout.head_cy - layout.half_height - 0.3 * volume)
    ends = hairline[1:-1:2]
    if identity.hairline == "bangs":
        ends = _draw_bangs(draw, layout, identity, hairline[5][1] - 0.1 * u)
    if identity.hair_style != "short":
        _draw_strands(draw, layout, identity, crown, ends)
        for side in (-1, 1):
            start = (cx + side * (a + 0.4 * volume), layout.head_cy - 0.4 * layout.half_height)
            _draw_strands(draw, layout, identity, start, [(cx + side * (a - 0.05 * u), side_bottom - 0.1 * u)])
    # A sheen on the crown.
    draw.arc(
        ellipse_box(cx, layout.head_cy - 0.55 * layout.half_height, 0.55 * a, 0.35 * layout.half_height),
        200,
        330,
        fill=shade(identity.hair_rgb, 1.3, 90),
        width=_stroke(u, 0.06),
    )
