//! `imexdepth infer`: depth for still images, written as 16-bit millimetre PNGs plus a colour
//! picture, one summary line per image on stdout.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use image::{ImageBuffer, Luma, RgbImage};

use imexdepth::engine::{DepthEngine, select};
use imexdepth::model::ModelFile;
use imexdepth::postprocess::{self, Colormap, DepthMap, DepthRange, Palette};
use imexdepth::preprocess::{Preprocessor, centre_crop};

use super::EngineArgs;

/// How an image of another aspect ratio than the model's input is fitted to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fit {
    /// Centre-crop to the model's aspect ratio (geometry kept); pixels outside the crop get
    /// depth 0 (invalid).
    Crop,
    /// Stretch the whole image to the model's input (every pixel gets a depth; shapes are
    /// distorted when the aspect ratios differ).
    Stretch,
}

#[derive(Debug, Args)]
pub struct InferArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Output folder (created if missing): <stem>.depth.png (16-bit, millimetres, same size as
    /// the input, 0 = invalid) and <stem>.color.png (colour-mapped depth).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Fitting of images whose aspect ratio differs from the model's input.
    #[arg(long, value_enum, default_value_t = Fit::Crop)]
    pub fit: Fit,
    /// Colour map of <stem>.color.png.
    #[arg(long, value_enum, default_value_t = Colormap::Turbo)]
    pub colormap: Colormap,
    /// Colour range in metres as NEAR:FAR; default: this image's 2nd to 98th percentile.
    #[arg(long, value_name = "NEAR:FAR")]
    pub range: Option<String>,
    /// Print one JSON object per image instead of the text line.
    #[arg(long)]
    pub json: bool,
    /// Images (PNG or JPEG, any size).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// What one image gave.
#[derive(Debug, serde::Serialize)]
struct Summary {
    image: PathBuf,
    depth_png: PathBuf,
    color_png: PathBuf,
    width: u32,
    height: u32,
    min_m: f32,
    median_m: f32,
    max_m: f32,
    color_range_m: [f32; 2],
    inference_ms: f64,
    engine: String,
    provider: String,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let model_path = &args.engine.model;
    let model = ModelFile::open(model_path)?;
    let mut engine = select::open(model_path, &args.engine.options())?;
    let mut pre = Preprocessor::new(&model.input)
        .with_context(|| format!("{}: model input not usable", model_path.display()))?;
    let range = args.range.as_deref().map(parse_range).transpose()?;
    prepare_out_dir(&args.out)?;
    tracing::info!("model {} on engine {} ({})", model.summary(), engine.name(), engine.provider());
    let mut failures = 0;
    for image in &args.images {
        match infer_one(image, &args, &model, engine.as_mut(), &mut pre, range) {
            Ok(summary) => print_summary(&summary, args.json),
            Err(err) => {
                failures += 1;
                eprintln!("error: {err:#}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} images failed", args.images.len());
    }
    Ok(())
}

fn parse_range(text: &str) -> anyhow::Result<DepthRange> {
    DepthRange::parse(text).with_context(|| {
        format!("--range expects NEAR:FAR in metres with 0 <= NEAR < FAR, got {text:?}")
    })
}

fn prepare_out_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let probe = dir.join(".imexdepth-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

fn infer_one(
    path: &Path,
    args: &InferArgs,
    model: &ModelFile,
    engine: &mut dyn DepthEngine,
    pre: &mut Preprocessor,
    range: Option<DepthRange>,
) -> anyhow::Result<Summary> {
    let picture = read_image(path)?;
    let (width, height) = picture.dimensions();
    let (mw, mh) = pre.size();
    let prepared = match args.fit {
        Fit::Crop => pre.run(&picture)?,
        Fit::Stretch => pre.run(&image::imageops::resize(
            &picture,
            mw,
            mh,
            image::imageops::FilterType::Triangle,
        ))?,
    };
    let start = Instant::now();
    let output = engine.run(&prepared.tensor)?;
    let inference_ms = start.elapsed().as_secs_f64() * 1e3;
    let depth = DepthMap::from_output(&output, &model.output)
        .with_context(|| format!("{}: output is not a depth map", model.path.display()))?;
    let full = place(&depth, (width, height), (mw, mh), args.fit);
    let stats = depth_stats(&full.data).with_context(|| {
        format!("{}: the model returned no finite positive depth", path.display())
    })?;
    let range = range.unwrap_or_else(|| auto_range(&full.data, stats));
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let depth_png = args.out.join(format!("{stem}.depth.png"));
    let color_png = args.out.join(format!("{stem}.color.png"));
    write_atomic(&depth_png, |tmp| {
        millimetres(&full).save_with_format(tmp, image::ImageFormat::Png)
    })?;
    let color = postprocess::colorize(&full, range, &Palette::new(args.colormap, false));
    write_atomic(&color_png, |tmp| color.save_with_format(tmp, image::ImageFormat::Png))?;
    Ok(Summary {
        image: path.to_path_buf(),
        depth_png,
        color_png,
        width,
        height,
        min_m: stats.0,
        median_m: stats.1,
        max_m: stats.2,
        color_range_m: [range.near, range.far],
        inference_ms,
        engine: engine.name().to_string(),
        provider: engine.provider(),
    })
}

fn read_image(path: &Path) -> anyhow::Result<RgbImage> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read image {}", path.display()))?;
    if meta.len() == 0 {
        bail!("{}: image file is empty (0 bytes); expected a PNG or JPEG", path.display());
    }
    let reader = image::ImageReader::open(path)
        .with_context(|| format!("cannot open image {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("cannot read image {}", path.display()))?;
    let picture = reader
        .decode()
        .with_context(|| format!("{}: not a readable PNG or JPEG image", path.display()))?;
    if picture.width() == 0 || picture.height() == 0 {
        bail!("{}: image has zero size", path.display());
    }
    Ok(picture.to_rgb8())
}

/// The model-size depth map placed on the input's pixel grid (0 outside a crop).
fn place(depth: &DepthMap, size: (u32, u32), model: (u32, u32), fit: Fit) -> DepthMap {
    if fit == Fit::Stretch || size == model {
        return depth.resized(size.0, size.1);
    }
    let (left, top, cw, ch) = centre_crop(size, model);
    let (x0, y0) = (left.round() as u32, top.round() as u32);
    let (cw, ch) = ((cw.round() as u32).min(size.0 - x0), (ch.round() as u32).min(size.1 - y0));
    let inner = depth.resized(cw.max(1), ch.max(1));
    let mut data = vec![0.0; size.0 as usize * size.1 as usize];
    for y in 0..inner.height {
        let src = &inner.data[(y * inner.width) as usize..][..inner.width as usize];
        let start = ((y0 + y) * size.0 + x0) as usize;
        data[start..start + src.len()].copy_from_slice(src);
    }
    DepthMap { width: size.0, height: size.1, data, unit: depth.unit }
}

/// `(min, median, max)` over finite positive values.
fn depth_stats(data: &[f32]) -> Option<(f32, f32, f32)> {
    let mut valid: Vec<f32> = data.iter().copied().filter(|v| v.is_finite() && *v > 0.0).collect();
    if valid.is_empty() {
        return None;
    }
    let mid = valid.len() / 2;
    let (_, median, _) = valid.select_nth_unstable_by(mid, f32::total_cmp);
    let median = *median;
    let min = valid.iter().copied().fold(f32::INFINITY, f32::min);
    let max = valid.iter().copied().fold(0.0, f32::max);
    Some((min, median, max))
}

fn auto_range(data: &[f32], stats: (f32, f32, f32)) -> DepthRange {
    let valid: Vec<f32> = data.iter().copied().filter(|v| v.is_finite() && *v > 0.0).collect();
    let (near, far) = postprocess::percentiles(&valid, (0.02, 0.98)).unwrap_or((stats.0, stats.2));
    DepthRange::new(near, far.max(near + 1e-3))
}

/// 16-bit millimetres, 0 where invalid, clamped to 65.535 m.
fn millimetres(depth: &DepthMap) -> ImageBuffer<Luma<u16>, Vec<u16>> {
    let data = depth
        .data
        .iter()
        .map(|&d| {
            if d.is_finite() && d > 0.0 {
                (d * 1000.0).round().clamp(1.0, 65535.0) as u16
            } else {
                0
            }
        })
        .collect();
    ImageBuffer::from_raw(depth.width, depth.height, data).expect("one value per pixel")
}

/// Writes through a temporary file in the same folder and renames, so no half-written file is
/// left behind.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&Path) -> image::ImageResult<()>,
) -> anyhow::Result<()> {
    let tmp = path.with_extension("png.partial");
    if let Err(err) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err).with_context(|| format!("cannot write {}", path.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn print_summary(s: &Summary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(s).expect("summary serialises"));
        return;
    }
    println!(
        "{}: {}x{} depth min {:.2} m, median {:.2} m, max {:.2} m; colour range {:.2}-{:.2} m; \
         {:.1} ms ({} {}) -> {}",
        s.image.display(),
        s.width,
        s.height,
        s.min_m,
        s.median_m,
        s.max_m,
        s.color_range_m[0],
        s.color_range_m[1],
        s.inference_ms,
        s.engine,
        s.provider,
        s.depth_png.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_places_depth_inside_and_zero_outside() {
        let depth = DepthMap {
            width: 4,
            height: 3,
            data: vec![2.0; 12],
            unit: imexdepth::postprocess::DepthUnit::Metres,
        };
        let full = place(&depth, (8, 3), (4, 3), Fit::Crop);
        assert_eq!(full.data[0], 0.0);
        assert_eq!(full.data[4], 2.0);
        assert_eq!(millimetres(&full).get_pixel(4, 1).0[0], 2000);
    }
}
