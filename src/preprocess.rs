//! Frame to model input: centre-crop to the model's aspect ratio, resize to its input size,
//! scale, and lay out as NCHW float32.
//!
//! The model takes `[1, C, H, W]` with `C = 3` (RGB) or `C = 1` (grey, BT.601 luma), values
//! `pixel / scale` (`scale` from the model file, 255 for the shipped models). The crop keeps
//! the picture's geometry (no stretching); the resized RGB picture is kept as the *view*: the
//! picture the depth map is aligned with, shown and recorded beside it. Resizing is bilinear
//! convolution through `fast_image_resize` (SIMD where the CPU has it).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::model::InputSpec;
use crate::tensor::Tensor;

/// Errors of preprocessing.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("model input shape {shape:?} is not [1, 3, H, W] (rgb) or [1, 1, H, W] (gray)")]
    Shape { shape: [usize; 4] },
    #[error("model input colour {color:?} is not \"rgb\" or \"gray\"")]
    Color { color: String },
    #[error("model input scale {scale} is not a positive number")]
    Scale { scale: f32 },
    #[error("empty frame ({width}x{height})")]
    EmptyFrame { width: u32, height: u32 },
    #[error("resizing failed: {source}")]
    Resize {
        #[source]
        source: fast_image_resize::ResizeError,
    },
}

/// A frame ready for the engine.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// `[1, C, H, W]`, `pixel / scale`.
    pub tensor: Tensor,
    /// The cropped and resized RGB picture, `W x H`.
    pub view: RgbImage,
}

/// Reusable preprocessing for one model input.
pub struct Preprocessor {
    width: u32,
    height: u32,
    gray: bool,
    inv_scale: f32,
    resizer: Resizer,
}

impl Preprocessor {
    /// Checks the input spec and prepares a resizer.
    pub fn new(input: &InputSpec) -> Result<Self, PreprocessError> {
        let [n, c, h, w] = input.shape;
        let gray = match (input.color.as_str(), c) {
            ("rgb", 3) => false,
            ("gray", 1) => true,
            ("rgb" | "gray", _) => return Err(PreprocessError::Shape { shape: input.shape }),
            _ => return Err(PreprocessError::Color { color: input.color.clone() }),
        };
        if n != 1 || h == 0 || w == 0 {
            return Err(PreprocessError::Shape { shape: input.shape });
        }
        if !(input.scale.is_finite() && input.scale > 0.0) {
            return Err(PreprocessError::Scale { scale: input.scale });
        }
        let (width, height) = (w as u32, h as u32);
        Ok(Self { width, height, gray, inv_scale: 1.0 / input.scale, resizer: Resizer::new() })
    }

    /// The model's input size, `(W, H)`.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Crops, resizes and converts one frame.
    pub fn run(&mut self, frame: &RgbImage) -> Result<Prepared, PreprocessError> {
        let view = self.resize(frame)?;
        let tensor = self.to_tensor(&view);
        Ok(Prepared { tensor, view })
    }

    /// Centre-crop to the model's aspect ratio and resize to its input size.
    pub fn resize(&mut self, frame: &RgbImage) -> Result<RgbImage, PreprocessError> {
        let (fw, fh) = frame.dimensions();
        if fw == 0 || fh == 0 {
            return Err(PreprocessError::EmptyFrame { width: fw, height: fh });
        }
        if (fw, fh) == (self.width, self.height) {
            return Ok(frame.clone());
        }
        let src = ImageRef::new(fw, fh, frame.as_raw(), PixelType::U8x3)
            .expect("an RgbImage buffer holds width * height * 3 bytes");
        let mut dst = Image::new(self.width, self.height, PixelType::U8x3);
        let (left, top, cw, ch) = centre_crop((fw, fh), (self.width, self.height));
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(left, top, cw, ch);
        self.resizer
            .resize(&src, &mut dst, &options)
            .map_err(|source| PreprocessError::Resize { source })?;
        Ok(RgbImage::from_raw(self.width, self.height, dst.into_vec())
            .expect("resized buffer has the destination size"))
    }

    /// RGB (or luma) planes, scaled.
    fn to_tensor(&self, view: &RgbImage) -> Tensor {
        let (w, h) = (self.width as usize, self.height as usize);
        let plane = w * h;
        let channels = if self.gray { 1 } else { 3 };
        let mut data = vec![0.0f32; channels * plane];
        for (i, px) in view.pixels().enumerate() {
            if self.gray {
                let [r, g, b] = px.0.map(f32::from);
                data[i] = (0.299 * r + 0.587 * g + 0.114 * b) * self.inv_scale;
            } else {
                for (c, &v) in px.0.iter().enumerate() {
                    data[c * plane + i] = f32::from(v) * self.inv_scale;
                }
            }
        }
        Tensor::from_vec([1, channels, h, w], data)
    }
}

/// The centred rectangle of `frame` with the aspect ratio of `target`: `(left, top, w, h)`.
pub fn centre_crop(frame: (u32, u32), target: (u32, u32)) -> (f64, f64, f64, f64) {
    let (fw, fh) = (f64::from(frame.0), f64::from(frame.1));
    let aspect = f64::from(target.0) / f64::from(target.1);
    if fw / fh > aspect {
        let w = fh * aspect;
        ((fw - w) / 2.0, 0.0, w, fh)
    } else {
        let h = fw / aspect;
        (0.0, (fh - h) / 2.0, fw, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shape: [usize; 4], color: &str) -> InputSpec {
        InputSpec { name: "image".into(), shape, color: color.into(), scale: 255.0 }
    }

    #[test]
    fn crops_to_aspect() {
        assert_eq!(centre_crop((640, 480), (320, 240)), (0.0, 0.0, 640.0, 480.0));
        assert_eq!(centre_crop((512, 512), (320, 240)), (0.0, 64.0, 512.0, 384.0));
        assert_eq!(centre_crop((800, 480), (320, 240)), (80.0, 0.0, 640.0, 480.0));
    }

    #[test]
    fn constant_frame_becomes_constant_planes() {
        let mut pre = Preprocessor::new(&spec([1, 3, 6, 8], "rgb")).unwrap();
        let frame = RgbImage::from_pixel(37, 23, image::Rgb([255, 51, 0]));
        let out = pre.run(&frame).unwrap();
        assert_eq!(out.tensor.shape, [1, 3, 6, 8]);
        assert_eq!(out.view.dimensions(), (8, 6));
        for (c, want) in [1.0f32, 0.2, 0.0].into_iter().enumerate() {
            let worst = out.tensor.plane(0, c).iter().map(|v| (v - want).abs()).fold(0.0, f32::max);
            assert!(worst < 1e-6, "channel {c} off by {worst}");
        }
    }

    #[test]
    fn layout_is_planar() {
        let mut pre = Preprocessor::new(&spec([1, 3, 1, 2], "rgb")).unwrap();
        let frame = RgbImage::from_raw(2, 1, vec![10, 20, 30, 40, 50, 60]).unwrap();
        let data = pre.run(&frame).unwrap().tensor.data;
        let want: Vec<f32> =
            [10., 40., 20., 50., 30., 60.].iter().map(|v| v * (1.0 / 255.0)).collect();
        assert_eq!(data, want);
    }

    #[test]
    fn refuses_bad_specs() {
        assert!(matches!(
            Preprocessor::new(&spec([1, 3, 4, 4], "bgr")),
            Err(PreprocessError::Color { .. })
        ));
        assert!(matches!(
            Preprocessor::new(&spec([2, 3, 4, 4], "rgb")),
            Err(PreprocessError::Shape { .. })
        ));
        assert!(Preprocessor::new(&spec([1, 1, 4, 4], "gray")).is_ok());
    }
}
