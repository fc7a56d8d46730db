//! `imexdepth live`: camera (or video, or photographs) to depth, in a window or headless, with
//! recording.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use imexdepth::capture::negotiate::FormatPreference;
use imexdepth::capture::{self, SourceOptions};
use imexdepth::live::{self, LiveConfig, Summary};
use imexdepth::postprocess::{Colormap, DepthRange, RangeMode, Style, View};
use imexdepth::record::RawInfo;

use super::EngineArgs;

const KEYS: &str = "\
Keys in the window:
  q, Esc   quit (recordings are finished properly; so are Ctrl-C and SIGTERM)
  v        next view: picture | depth, overlay | depth, picture | overlay
  c        next colour map (turbo, inferno, magma, viridis, gray)
  i        invert the colour map
  f        fixed / automatic colour range
  +, -     overlay opacity
  r        pause / resume recording
  d        HUD on / off
  h        key help on the picture
The HUD shows fps, glass-to-glass latency, engine and provider, dropped frames, the colour
range, and the depth under the mouse pointer.

Sources: /dev/videoN or N (V4L2 camera), FILE.y4m, FILE.mp4 (H.264), an image file, a folder
of images, a quoted glob such as 'photos/*.png', synthetic or synthetic:WIDTHxHEIGHT.";

/// `imexdepth live` arguments.
#[derive(Debug, Args)]
#[command(after_long_help = KEYS)]
pub struct LiveArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Camera (/dev/video0, 0), video file (.y4m, .mp4), image, folder, glob, or synthetic.
    #[arg(long, default_value = "/dev/video0")]
    pub source: String,
    /// Frame rate: of images and the synthetic scene (default 10), requested from a camera
    /// (default 30), or overriding a video file's.
    #[arg(long)]
    pub fps: Option<f64>,
    /// Camera size (or synthetic scene size), WIDTHxHEIGHT; default 640x480.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Camera pixel format to prefer; falls back through what the camera offers.
    #[arg(long, value_enum, default_value_t = FormatPreference::Auto)]
    pub pixel_format: FormatPreference,
    /// Loop video files at their end.
    #[arg(long = "loop", conflicts_with = "once")]
    pub looping: bool,
    /// Play images once instead of looping them.
    #[arg(long)]
    pub once: bool,
    /// Run headless (also what happens, with a warning, when no window can be opened).
    #[arg(long)]
    pub no_window: bool,
    /// Check every Nth inferred frame against the native engine on a background thread (ONNX
    /// Runtime engines only); NaN, Inf, a blank frame or a divergence past the precision's
    /// tolerance warns, and an fp16/int8 engine is rebuilt once in fp32. 0 = off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub validate_every: u64,
    /// Window scale factor (1, 2, 4 or 8).
    #[arg(long, default_value_t = 2)]
    pub scale: u32,
    /// What the panels show.
    #[arg(long, value_enum, default_value_t = View::PictureDepth)]
    pub view: View,
    #[arg(long, value_enum, default_value_t = Colormap::Turbo)]
    pub colormap: Colormap,
    /// Invert the colour map (default: near is hot/bright).
    #[arg(long)]
    pub invert: bool,
    /// Colour range: `auto` (smoothed 2nd-98th percentiles) or fixed `NEAR:FAR` in the model's
    /// unit, e.g. `0.5:6`.
    #[arg(long, default_value = "auto", value_parser = parse_range)]
    pub range: RangeMode,
    /// Overlay opacity, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Record what the window shows as H.264 MP4.
    #[arg(long, value_name = "FILE.mp4")]
    pub record: Option<PathBuf>,
    /// Record per frame the RGB picture and 16-bit depth in millimetres, plus meta.json.
    #[arg(long, value_name = "DIR")]
    pub record_raw: Option<PathBuf>,
    /// Stop after this many shown frames.
    #[arg(long)]
    pub frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    capture::parse_size(text)
        .ok_or_else(|| format!("expected WIDTHxHEIGHT, e.g. 640x480, got {text:?}"))
}

fn parse_range(text: &str) -> Result<RangeMode, String> {
    if text == "auto" {
        return Ok(RangeMode::Auto);
    }
    DepthRange::parse(text).map(RangeMode::Fixed).ok_or_else(|| {
        format!("expected auto or NEAR:FAR with 0 <= NEAR < FAR, e.g. 0.5:6, got {text:?}")
    })
}

/// Runs `imexdepth live`.
pub fn run(args: LiveArgs) -> anyhow::Result<()> {
    let stop = install_stop_handler()?;
    let model = imexdepth::model::ModelFile::open(&args.engine.model)
        .with_context(|| format!("opening model {}", args.engine.model.display()))?;
    let engine = imexdepth::engine::checked::CheckedEngine::open(
        &args.engine.model,
        &args.engine.options(),
        args.validate_every,
    )
    .with_context(|| format!("opening an engine for {}", args.engine.model.display()))?;
    let engine: Box<dyn imexdepth::engine::DepthEngine> = Box::new(engine);
    if args.validate_every > 0 {
        match engine.name() {
            "native" => {
                tracing::warn!("--validate-every ignored: the native engine is the reference")
            }
            _ => tracing::info!(
                "live validation: every {} frames against the native engine",
                args.validate_every
            ),
        }
    }
    let source = capture::open(&source_options(&args))
        .with_context(|| format!("opening source {}", args.source))?;
    let info = RawInfo {
        model: args.engine.model.display().to_string(),
        engine: engine.name().to_string(),
        provider: engine.provider(),
        intrinsics: None,
    };
    let config = live_config(&args, model.input.clone(), model.output.clone(), info, stop);
    let summary = live::run(source, engine, config)?;
    print_summary(&summary, args.json)?;
    match summary.error {
        Some(error) => Err(error).context("the live run ended with an error (files were finished)"),
        None => Ok(()),
    }
}

fn source_options(args: &LiveArgs) -> SourceOptions {
    let looping = if args.looping {
        Some(true)
    } else if args.once {
        Some(false)
    } else {
        None
    };
    SourceOptions {
        spec: args.source.clone(),
        fps: args.fps,
        size: args.size,
        pixel_format: args.pixel_format,
        looping,
    }
}

fn live_config(
    args: &LiveArgs,
    input: imexdepth::model::InputSpec,
    output: imexdepth::model::OutputSpec,
    info: RawInfo,
    stop: Arc<AtomicBool>,
) -> LiveConfig {
    let mut config = LiveConfig::new(input, output, info);
    config.frames = args.frames;
    config.duration = args.duration.map(Duration::from_secs_f64);
    config.window = (!args.no_window).then_some(args.scale);
    config.style = Style::new(args.view, args.colormap, args.invert, args.alpha);
    config.range = args.range;
    config.record_mp4 = args.record.clone();
    config.record_raw = args.record_raw.clone();
    config.stop = stop;
    config
}

/// Ctrl-C and SIGTERM raise the stop flag; a second one exits at once.
fn install_stop_handler() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without finishing files");
            std::process::exit(130);
        }
        eprintln!("interrupt: finishing files (again to exit at once)");
    })
    .context("installing the Ctrl-C / SIGTERM handler")?;
    Ok(stop)
}

fn print_summary(s: &Summary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s).context("serialising the summary")?);
        return Ok(());
    }
    println!("source     {}", s.source);
    println!("engine     {} ({})", s.engine, s.provider);
    println!("ended      {:?} after {:.2} s", s.end, s.wall_s);
    println!(
        "frames     {} captured, {} inferred, {} shown ({:.2} fps)",
        s.frames_captured, s.frames_inferred, s.frames_shown, s.fps
    );
    println!(
        "dropped    {} before inference, {} before output, {} by the source",
        s.dropped_before_inference, s.dropped_before_output, s.source_gaps
    );
    let t = |name: &str, t: &live::Timing| {
        println!(
            "{name:<10} mean {:.1} ms, p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
            t.mean, t.p50, t.p90, t.p99, t.max
        );
    };
    t("engine", &s.engine_ms);
    t("frame", &s.pipeline_frame_ms);
    t("preprocess", &s.preprocess_ms);
    t("output", &s.output_ms);
    t("latency", &s.latency_ms);
    if let (Some(first), Some(last)) = (s.latency_p99_first_minute_ms, s.latency_p99_last_minute_ms)
    {
        println!("latency p99 first minute {first:.1} ms, last whole minute {last:.1} ms");
    }
    for f in &s.files {
        println!(
            "wrote      {} ({} frames, {:.2} s, {} bytes)",
            f.path.display(),
            f.frames,
            f.duration_s,
            f.bytes
        );
    }
    for e in &s.record_errors {
        println!("record error: {e}");
    }
    Ok(())
}
