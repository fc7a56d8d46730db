//! `imexdepth validate`: runs the chosen engine and the native engine on synthetic inputs and on
//! real photographs, prints the maximum absolute and relative error of the output for each, and
//! fails past the tolerance of the engine's precision (fp32 1e-4 relative, fp16 1e-2, int8 2e-2).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use imexdepth::engine::DepthEngine;
use imexdepth::engine::native::NativeEngine;
use imexdepth::engine::parity::{Precision, is_blank, tier_for};
use imexdepth::engine::select;
use imexdepth::model::{InputSpec, ModelFile};
use imexdepth::preprocess::Preprocessor;
use imexdepth::tensor::Tensor;
use imexdepth::tolerance::{Comparison, compare};

use super::EngineArgs;

/// Arguments of `imexdepth validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Folder of real photographs (`*.png`, `*.jpg`) run besides the synthetic inputs.
    #[arg(long, default_value = "assets/real")]
    pub images: PathBuf,
    /// Timed runs per input and engine (after the first, untimed).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// One JSON object per line on stdout instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One input's result.
#[derive(Debug, Serialize)]
struct Row {
    input: String,
    output: String,
    engine: String,
    provider: String,
    precision: Precision,
    #[serde(flatten)]
    comparison: Comparison,
    passed: bool,
    /// Output flat while the native one is not.
    blank: bool,
    engine_ms: f64,
    native_ms: f64,
}

#[derive(Debug, Serialize)]
struct Summary {
    summary: bool,
    model: PathBuf,
    engine: String,
    provider: String,
    precision: Precision,
    inputs: usize,
    failed: usize,
    worst_max_abs: f64,
    worst_max_relative: f64,
    tier_limit: f64,
    engine_ms_mean: f64,
    native_ms_mean: f64,
    passed: bool,
}

/// Runs `imexdepth validate`; an error (non-zero exit) if any input is past tolerance.
pub fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let path = &args.engine.model;
    let model = ModelFile::open(path).with_context(|| format!("opening {}", path.display()))?;
    let options = args.engine.options();
    let mut engine = select::open(path, &options).with_context(|| {
        format!("opening {} with --engine {:?}", path.display(), options.engine)
    })?;
    if engine.name() == "native" {
        tracing::warn!("the chosen engine is the native engine: validate compares it with itself");
    }
    let mut native = NativeEngine::from_model(model.clone())
        .with_context(|| format!("opening {} with the native engine", path.display()))?;

    let precision = if engine.name() == "native" { Precision::Fp32 } else { options.precision() };
    let inputs = inputs(&model.input, &args.images)?;
    let mut rows = Vec::new();
    for (name, input) in &inputs {
        let row = check(name, input, engine.as_mut(), &mut native, precision, &model, &args)?;
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            print_row(&row);
        }
        rows.push(row);
    }
    let summary = summarise(&rows, &model, engine.as_ref(), precision);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    if !summary.passed {
        bail!(
            "{} of {} inputs past the {} tolerance ({:.0e} relative)",
            summary.failed,
            summary.inputs,
            precision,
            summary.tier_limit
        );
    }
    Ok(())
}

fn check(
    name: &str,
    input: &Tensor,
    engine: &mut dyn DepthEngine,
    native: &mut NativeEngine,
    precision: Precision,
    model: &ModelFile,
    args: &ValidateArgs,
) -> anyhow::Result<Row> {
    let (got, engine_ms) = timed(engine, input, args.repeat)
        .with_context(|| format!("{name}: {} engine", engine.name()))?;
    let (want, native_ms) =
        timed(native, input, args.repeat).with_context(|| format!("{name}: native engine"))?;
    if got.shape != want.shape {
        bail!("{name}: output shape {:?}, native engine {:?}", got.shape, want.shape);
    }
    let comparison = compare(&got.data, &want.data, tier_for(precision));
    let blank = is_blank(&got.data) && !is_blank(&want.data);
    Ok(Row {
        input: name.to_string(),
        output: model.output.name.clone(),
        engine: engine.name().to_string(),
        provider: engine.provider(),
        precision,
        passed: comparison.passed() && !blank,
        comparison,
        blank,
        engine_ms,
        native_ms,
    })
}

/// Output of the first run, and mean milliseconds of `repeat` further runs.
fn timed(
    engine: &mut dyn DepthEngine,
    input: &Tensor,
    repeat: usize,
) -> Result<(Tensor, f64), imexdepth::engine::EngineError> {
    let first = engine.run(input)?;
    if repeat == 0 {
        return Ok((first, f64::NAN));
    }
    let start = Instant::now();
    for _ in 0..repeat {
        engine.run(input)?;
    }
    Ok((first, start.elapsed().as_secs_f64() * 1e3 / repeat as f64))
}

/// Synthetic inputs in `[0, 1]`, then the photographs in `images` prepared as the live pipeline
/// prepares camera frames.
fn inputs(spec: &InputSpec, images: &Path) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut out = synthetic(spec.shape);
    let photos = photographs(images);
    if photos.is_empty() {
        tracing::warn!("no photographs in {}: synthetic inputs only", images.display());
    }
    let single =
        InputSpec { shape: [1, spec.shape[1], spec.shape[2], spec.shape[3]], ..spec.clone() };
    let mut pre = Preprocessor::new(&single).context("preparing photographs for this model")?;
    for photo in photos {
        let image =
            image::open(&photo).with_context(|| format!("reading {}", photo.display()))?.to_rgb8();
        let one = pre.run(&image).with_context(|| format!("preparing {}", photo.display()))?;
        let name = photo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        out.push((name, repeat_batch(&one.tensor, spec.shape[0])));
    }
    Ok(out)
}

fn photographs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut photos: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "png" | "jpg" | "jpeg")
        })
        .collect();
    photos.sort();
    photos
}

/// `[1, C, H, W]` repeated to `[n, C, H, W]` (batch models).
fn repeat_batch(one: &Tensor, n: usize) -> Tensor {
    if n <= 1 {
        return one.clone();
    }
    let [_, c, h, w] = one.shape;
    Tensor::from_vec([n, c, h, w], one.data.repeat(n))
}

fn synthetic(shape: [usize; 4]) -> Vec<(String, Tensor)> {
    let [n, c, h, w] = shape;
    let make = |f: &dyn Fn(usize, usize, usize, usize) -> f32| {
        let mut data = Vec::with_capacity(n * c * h * w);
        for b in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        data.push(f(b, ch, y, x));
                    }
                }
            }
        }
        Tensor::from_vec(shape, data)
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = Vec::with_capacity(n * c * h * w);
    for _ in 0..n * c * h * w {
        // xorshift64*, fixed seed: the same inputs every run.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        noise.push((seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32);
    }
    vec![
        ("synthetic:black".into(), Tensor::zeros(shape)),
        ("synthetic:grey".into(), make(&|_, _, _, _| 0.5)),
        (
            "synthetic:gradient".into(),
            make(&|_, ch, y, x| {
                ((x as f32 / w.max(1) as f32) + (y as f32 / h.max(1) as f32) + ch as f32 * 0.1)
                    / 2.2
            }),
        ),
        ("synthetic:checkerboard".into(), make(&|_, _, y, x| ((y / 8 + x / 8) % 2) as f32)),
        ("synthetic:noise".into(), Tensor::from_vec(shape, noise)),
    ]
}

fn summarise(
    rows: &[Row],
    model: &ModelFile,
    engine: &dyn DepthEngine,
    precision: Precision,
) -> Summary {
    let mean = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / rows.len().max(1) as f64;
    let failed = rows.iter().filter(|r| !r.passed).count();
    Summary {
        summary: true,
        model: model.path.clone(),
        engine: engine.name().to_string(),
        provider: engine.provider(),
        precision,
        inputs: rows.len(),
        failed,
        worst_max_abs: rows.iter().map(|r| r.comparison.max_abs).fold(0.0, f64::max),
        worst_max_relative: rows.iter().map(|r| r.comparison.max_relative).fold(0.0, f64::max),
        tier_limit: tier_for(precision).max_relative(),
        engine_ms_mean: mean(&|r| r.engine_ms),
        native_ms_mean: mean(&|r| r.native_ms),
        passed: failed == 0 && !rows.is_empty(),
    }
}

fn print_row(r: &Row) {
    let verdict = if r.passed { "ok  " } else { "FAIL" };
    let blank = if r.blank { "  BLANK OUTPUT" } else { "" };
    println!(
        "{verdict} {:<28} {}: max abs {:.3e}  max rel {:.3e}  (limit {:.0e})  {} {:.1} ms, native \
         {:.1} ms{blank}",
        r.input,
        r.output,
        r.comparison.max_abs,
        r.comparison.max_relative,
        r.comparison.tier_limit,
        r.provider,
        r.engine_ms,
        r.native_ms
    );
}

fn print_summary(s: &Summary) {
    let verdict = if s.passed { "PASS" } else { "FAIL" };
    println!(
        "{verdict} {}: {} ({}, {}) vs native on {} inputs, {} failed; worst max abs {:.3e}, worst \
         max rel {:.3e} (limit {:.0e}); mean {:.1} ms vs native {:.1} ms",
        s.model.display(),
        s.engine,
        s.provider,
        s.precision,
        s.inputs,
        s.failed,
        s.worst_max_abs,
        s.worst_max_relative,
        s.tier_limit,
        s.engine_ms_mean,
        s.native_ms_mean
    );
}
