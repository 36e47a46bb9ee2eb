//! A small line-chart renderer on an `image::RgbImage`: panels with axes, ticks, gridlines,
//! polylines with markers, a legend of coloured boxes, and a built-in 5x7 bitmap font.

use image::{Rgb, RgbImage};

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const REFERENCE: Rgb<u8> = Rgb([150, 150, 150]);

/// Distinct line colours (cycled).
pub const PALETTE: [Rgb<u8>; 6] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([214, 39, 40]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
];

/// One line: a colour, a label and a y value per x.
pub struct Series {
    pub label: String,
    pub color: Rgb<u8>,
    pub ys: Vec<f64>,
}

/// One chart panel.
pub struct Panel<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub xs: &'a [f64],
    pub series: &'a [Series],
    /// A dashed horizontal reference line (e.g. speed-up 1).
    pub reference: Option<f64>,
}

/// Pixel rectangle: left, top, width, height.
#[derive(Clone, Copy)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, c);
    }
}

pub fn fill_rect(img: &mut RgbImage, r: Rect, c: Rgb<u8>) {
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            put(img, x, y, c);
        }
    }
}

/// A solid line of width `thick` (Bresenham, with a square brush).
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>, thick: i64) {
    dashed_line(img, (x0, y0), (x1, y1), c, thick, 0);
}

/// Like [`line`]; `dash` > 0 draws dashes and gaps of that many steps.
fn dashed_line(
    img: &mut RgbImage,
    (mut x0, mut y0): (i64, i64),
    (x1, y1): (i64, i64),
    c: Rgb<u8>,
    thick: i64,
    dash: i64,
) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    let mut step = 0i64;
    loop {
        if dash == 0 || (step / dash) % 2 == 0 {
            for oy in 0..thick {
                for ox in 0..thick {
                    put(img, x0 + ox - thick / 2, y0 + oy - thick / 2, c);
                }
            }
        }
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
        step += 1;
    }
}

/// Rows of a 5x7 glyph (bit 4 = leftmost column). Unknown characters draw as blanks;
/// lowercase letters use the uppercase glyphs, except `x`, which is a small multiplication-like x.
fn glyph(ch: char) -> [u8; 7] {
    match ch.to_ascii_uppercase() {
        _ if ch == 'x' => [0, 0, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001],
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '/' => [1, 2, 2, 4, 8, 8, 16],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        _ => [0; 7],
    }
}

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 6 * scale
}

/// Draws `text` with its top-left corner at (x, y).
pub fn text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: i64, c: Rgb<u8>) {
    for (i, ch) in text.chars().enumerate() {
        let left = x + i as i64 * 6 * scale;
        for (row, bits) in glyph(ch).iter().enumerate() {
            for col in 0..5 {
                if bits & (1 << (4 - col)) != 0 {
                    fill_rect(
                        img,
                        Rect {
                            x: left + col * scale,
                            y: y + row as i64 * scale,
                            w: scale,
                            h: scale,
                        },
                        c,
                    );
                }
            }
        }
    }
}

/// A "nice" tick step (1, 2, 2.5 or 5 times a power of ten) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let rough = (span / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * mag)
}

fn label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else if (step * 10.0).fract().abs() < 1e-9 {
        1
    } else {
        2
    };
    format!("{v:.decimals$}")
}

/// Draws one panel into `area` (title above the plot, tick labels left and below).
pub fn panel(img: &mut RgbImage, area: Rect, p: &Panel<'_>) {
    let plot = Rect {
        x: area.x + 60,
        y: area.y + 30,
        w: area.w - 80,
        h: area.h - 80,
    };
    let tw = text_width(p.title, 2);
    text(img, area.x + (area.w - tw) / 2, area.y, p.title, 2, BLACK);

    let finite = p
        .series
        .iter()
        .flat_map(|s| &s.ys)
        .filter(|v| v.is_finite());
    let y_max = finite
        .copied()
        .fold(p.reference.unwrap_or(0.0), f64::max)
        .max(1e-9);
    let y_step = nice_step(y_max * 1.08, 5.0);
    let y_top = (y_max * 1.08 / y_step).ceil() * y_step;
    let x_min = p.xs.iter().copied().fold(f64::INFINITY, f64::min);
    let x_max = p.xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x_min, x_max) = if x_max > x_min {
        (x_min, x_max)
    } else {
        (x_min - 1.0, x_min + 1.0)
    };
    let px = |x: f64| plot.x + ((x - x_min) / (x_max - x_min) * (plot.w - 20) as f64) as i64 + 10;
    let py = |y: f64| plot.y + plot.h - (y / y_top * plot.h as f64) as i64;

    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_top + 1e-9 {
        let yy = py(y);
        line(img, (plot.x, yy), (plot.x + plot.w, yy), GRID, 1);
        line(img, (plot.x - 5, yy), (plot.x, yy), BLACK, 1);
        let l = label(y, y_step);
        text(img, plot.x - 8 - text_width(&l, 1), yy - 3, &l, 1, BLACK);
        y += y_step;
    }
    // x ticks at the data's x values.
    for &x in p.xs {
        let xx = px(x);
        line(img, (xx, plot.y), (xx, plot.y + plot.h), GRID, 1);
        line(
            img,
            (xx, plot.y + plot.h),
            (xx, plot.y + plot.h + 5),
            BLACK,
            1,
        );
        let l = label(x, 1.0);
        text(
            img,
            xx - text_width(&l, 1) / 2,
            plot.y + plot.h + 9,
            &l,
            1,
            BLACK,
        );
    }
    let xl = text_width(p.x_label, 2);
    text(
        img,
        plot.x + (plot.w - xl) / 2,
        plot.y + plot.h + 24,
        p.x_label,
        2,
        BLACK,
    );
    // Axes.
    line(img, (plot.x, plot.y), (plot.x, plot.y + plot.h), BLACK, 2);
    line(
        img,
        (plot.x, plot.y + plot.h),
        (plot.x + plot.w, plot.y + plot.h),
        BLACK,
        2,
    );
    if let Some(r) = p.reference {
        let yy = py(r);
        dashed_line(img, (plot.x, yy), (plot.x + plot.w, yy), REFERENCE, 2, 6);
    }
    // Series.
    for s in p.series {
        let points: Vec<(i64, i64)> =
            p.xs.iter()
                .zip(&s.ys)
                .filter(|(_, y)| y.is_finite())
                .map(|(&x, &y)| (px(x), py(y)))
                .collect();
        for w in points.windows(2) {
            line(img, w[0], w[1], s.color, 3);
        }
        for &(x, y) in &points {
            fill_rect(
                img,
                Rect {
                    x: x - 4,
                    y: y - 4,
                    w: 9,
                    h: 9,
                },
                s.color,
            );
        }
    }
}

/// A one-row legend: a coloured box and the label per series, starting at (x, y).
pub fn legend(img: &mut RgbImage, x: i64, y: i64, series: &[Series]) {
    let mut left = x;
    for s in series {
        fill_rect(
            img,
            Rect {
                x: left,
                y,
                w: 18,
                h: 14,
            },
            s.color,
        );
        text(img, left + 26, y, &s.label, 2, BLACK);
        left += 26 + text_width(&s.label, 2) + 30;
    }
}
