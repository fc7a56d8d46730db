//! `imexdepth bench`: per-stage latency with percentiles; `--compare` interleaves several
//! configurations in one process and prints ratios against the first.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use imexdepth::bench::{self, Config, Report};
use imexdepth::capture::{self, SourceOptions};
use imexdepth::engine::native::{NativeEngine, peak_macs_per_second};
use imexdepth::engine::select::{self, EngineChoice};
use imexdepth::model::ModelFile;
use imexdepth::preprocess::Preprocessor;

use super::EngineArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Frame source (as for `live`); default: the synthetic moving scene.
    #[arg(long, default_value = "synthetic")]
    pub source: String,
    /// Source frame size WIDTHxHEIGHT (synthetic scene and cameras), e.g. 640x480.
    #[arg(long, value_name = "WxH", default_value = "640x480")]
    pub size: String,
    /// Measured frames per configuration.
    #[arg(long, default_value_t = 50)]
    pub frames: u64,
    /// Warm-up frames per configuration, excluded from the figures (the first frame's time,
    /// which includes engine builds, is reported apart).
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Also time H.264 encoding of the composed canvas (the recorder's cost).
    #[arg(long)]
    pub encode: bool,
    /// More configurations, run interleaved with the first, as ENGINE:MODEL with ENGINE one
    /// of native, ort (the --ep, --fp16 and library flags apply), e.g.
    /// --compare native:models/resnet-depth-240x320.onnx. Ratios are against the first.
    #[arg(long, value_name = "ENGINE:MODEL")]
    pub compare: Vec<String>,
    /// One JSON object per configuration on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let size = capture::parse_size(&args.size).with_context(|| {
        format!("--size expects WIDTHxHEIGHT such as 640x480, got {:?}", args.size)
    })?;
    let mut specs = vec![(args.engine.engine, args.engine.model.clone())];
    for text in &args.compare {
        specs.push(parse_compare(text)?);
    }
    let mut configs = Vec::new();
    for (engine, model) in specs {
        configs.push(open_config(&args, engine, model, size)?);
    }
    eprintln!("measuring the machine's peak float32 multiply-add rate (0.5 s)...");
    let peak = peak_macs_per_second(Duration::from_millis(500));
    let reports = bench::run(&mut configs, args.warmup, args.frames, Some(peak))?;
    for config in configs {
        if let Some(encoder) = config.encoder {
            let _ = encoder.finish();
        }
    }
    if args.json {
        for r in &reports {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&reports, peak);
    }
    Ok(())
}

fn parse_compare(text: &str) -> anyhow::Result<(EngineChoice, PathBuf)> {
    let (engine, model) = text
        .split_once(':')
        .with_context(|| format!("--compare expects ENGINE:MODEL, got {text:?}"))?;
    let engine = match engine {
        "native" => EngineChoice::Native,
        "ort" => EngineChoice::Ort,
        "auto" => EngineChoice::Auto,
        other => anyhow::bail!("--compare engine must be native, ort or auto, got {other:?}"),
    };
    Ok((engine, PathBuf::from(model)))
}

fn open_config(
    args: &BenchArgs,
    engine: EngineChoice,
    model_path: PathBuf,
    size: (u32, u32),
) -> anyhow::Result<Config> {
    let model = ModelFile::open(&model_path)?;
    let mut options = args.engine.options();
    options.engine = engine;
    let engine = select::open(&model_path, &options)?;
    let macs = NativeEngine::from_model(model.clone()).ok().map(|n| n.macs().conv);
    let preprocessor = Preprocessor::new(&model.input)?;
    let mut source_options = SourceOptions::new(args.source.clone());
    source_options.size = Some(size);
    source_options.fps = Some(1000.0); // as fast as the stages allow
    source_options.looping = Some(true);
    let source = capture::open(&source_options)?;
    let stem = model_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let label = format!("{} {stem}", engine.name());
    let mut config = Config::new(label, engine, preprocessor, model.output.clone(), source);
    config.macs = macs;
    if args.encode {
        let [_, _, h, w] = model.input.shape;
        let canvas = imexdepth::postprocess::canvas_size(w as u32, h as u32);
        let path = std::env::temp_dir().join(format!("imexdepth-bench-{}.mp4", std::process::id()));
        config.encoder = Some(imexdepth::record::create_mp4(&path, canvas, 30.0)?);
    }
    Ok(config)
}

fn print_table(reports: &[Report], peak: f64) {
    println!("peak float32 rate (gemm, all threads): {:.1} GMAC/s", peak / 1e9);
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8}",
        "configuration (ms)",
        "capture",
        "prep",
        "infer",
        "infer99",
        "post",
        "e2e",
        "e2e p99",
        "x floor"
    );
    for r in reports {
        println!(
            "{:<36} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7.2} {:>9.2} {:>8}",
            format!("{} ({})", r.label, r.provider),
            r.capture_ms.mean,
            r.preprocess_ms.mean,
            r.inference_ms.mean,
            r.inference_ms.p99,
            r.postprocess_ms.mean,
            r.end_to_end_ms.mean,
            r.end_to_end_ms.p99,
            r.floor_ratio.map_or("-".into(), |f| format!("{f:.2}")),
        );
    }
    let first = &reports[0];
    for r in &reports[1..] {
        println!(
            "ratio {} / {}: inference {:.3}, end to end {:.3}",
            r.label,
            first.label,
            r.inference_ms.mean / first.inference_ms.mean,
            r.end_to_end_ms.mean / first.end_to_end_ms.mean
        );
    }
    for r in reports {
        let encode = r.encode_ms.map_or(String::new(), |e| format!(", encode {:.2} ms", e.mean));
        println!(
            "{}: first frame {:.1} ms; p50/p90/p99/max inference {:.2}/{:.2}/{:.2}/{:.2} ms; {:.1} fps; \
             peak RSS {:.0} MiB; CPU {:.2} cores{encode}",
            r.label,
            r.first_frame_ms,
            r.inference_ms.p50,
            r.inference_ms.p90,
            r.inference_ms.p99,
            r.inference_ms.max,
            r.fps,
            r.peak_rss_mib.unwrap_or(f64::NAN),
            r.cpu_cores_busy.unwrap_or(f64::NAN),
        );
    }
}
