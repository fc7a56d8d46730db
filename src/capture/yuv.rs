//! YUV to RGB conversion for camera and video frames: packed YUYV (4:2:2), semi-planar NV12
//! (4:2:0), planar I420 / 4:2:2 / 4:4:4, and grey.
//!
//! BT.601 with limited range (Y in 16..235, Cb/Cr in 16..240), the convention of webcams and of
//! YUV4MPEG2 files:
//!
//! R = 1.164 (Y - 16) + 1.596 (Cr - 128)
//! G = 1.164 (Y - 16) - 0.392 (Cb - 128) - 0.813 (Cr - 128)
//! B = 1.164 (Y - 16) + 2.017 (Cb - 128)
//!
//! in 16.16 fixed point. Buffers shorter than the size asks for are a broken contract (the
//! callers check lengths first) and panic with the expected and found lengths.

use image::RgbImage;

/// One pixel, BT.601 limited range.
#[inline]
pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16).max(0) * 76_284;
    let (d, e) = (i32::from(u) - 128, i32::from(v) - 128);
    let clamp = |x: i32| ((x + 32_768) >> 16).clamp(0, 255) as u8;
    [clamp(c + 104_595 * e), clamp(c - 25_690 * d - 53_281 * e), clamp(c + 132_186 * d)]
}

/// Packed YUYV 4:2:2 (`Y0 U Y1 V`); `width` must be even.
pub fn yuyv_to_rgb(data: &[u8], width: u32, height: u32) -> RgbImage {
    let needed = width as usize * height as usize * 2;
    assert!(data.len() >= needed, "YUYV buffer: expected {needed} bytes, got {}", data.len());
    let mut out = vec![0u8; width as usize * height as usize * 3];
    for (quad, px) in data[..needed].chunks_exact(4).zip(out.chunks_exact_mut(6)) {
        px[..3].copy_from_slice(&yuv_to_rgb(quad[0], quad[1], quad[3]));
        px[3..].copy_from_slice(&yuv_to_rgb(quad[2], quad[1], quad[3]));
    }
    RgbImage::from_raw(width, height, out).expect("buffer sized from the dimensions")
}

/// Semi-planar NV12: a Y plane, then interleaved `U V` at half size.
pub fn nv12_to_rgb(data: &[u8], width: u32, height: u32) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let needed = w * h + 2 * cw * ch;
    assert!(data.len() >= needed, "NV12 buffer: expected {needed} bytes, got {}", data.len());
    let (luma, chroma) = data.split_at(w * h);
    RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let c = 2 * ((y / 2) * cw + x / 2);
        image::Rgb(yuv_to_rgb(luma[y * w + x], chroma[c], chroma[c + 1]))
    })
}

/// Planar Y, U, V with chroma subsampled by `(sx, sy)`: (2, 2) is I420, (2, 1) 4:2:2,
/// (1, 1) 4:4:4.
pub fn planar_to_rgb(data: &[u8], width: u32, height: u32, sub: (usize, usize)) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let (cw, ch) = (w.div_ceil(sub.0), h.div_ceil(sub.1));
    let needed = w * h + 2 * cw * ch;
    assert!(data.len() >= needed, "planar YUV buffer: expected {needed} bytes, got {}", data.len());
    let (luma, chroma) = data.split_at(w * h);
    let (u, v) = chroma.split_at(cw * ch);
    RgbImage::from_fn(width, height, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let c = (y / sub.1) * cw + x / sub.0;
        image::Rgb(yuv_to_rgb(luma[y * w + x], u[c], v[c]))
    })
}

/// 8-bit grey (full range).
pub fn gray_to_rgb(data: &[u8], width: u32, height: u32) -> RgbImage {
    let needed = width as usize * height as usize;
    assert!(data.len() >= needed, "grey buffer: expected {needed} bytes, got {}", data.len());
    RgbImage::from_fn(width, height, |x, y| {
        let g = data[y as usize * width as usize + x as usize];
        image::Rgb([g, g, g])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_colours() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 limited-range red is Y 81, Cb 90, Cr 240.
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 253 && g <= 2 && b <= 2, "{r} {g} {b}");
    }

    #[test]
    fn layouts_agree_on_a_flat_colour() {
        let (w, h) = (4u32, 2u32);
        let (y, u, v) = (81u8, 90u8, 240u8);
        let yuyv: Vec<u8> = (0..w * h / 2).flat_map(|_| [y, u, y, v]).collect();
        let mut nv12 = vec![y; 8];
        nv12.extend([u, v, u, v]);
        let mut i420 = vec![y; 8];
        i420.extend([u, u, v, v]);
        let expected = yuyv_to_rgb(&yuyv, w, h);
        assert_eq!(nv12_to_rgb(&nv12, w, h), expected);
        assert_eq!(planar_to_rgb(&i420, w, h, (2, 2)), expected);
    }
}
