//! Command-line interface: argument definitions and the wiring of library parts per command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use imexdepth::engine::select::{EngineChoice, EngineOptions, ProviderChoice};

pub mod bench;
pub mod infer;
pub mod info;
pub mod live;
pub mod validate;

/// Live monocular depth with IMEXnet: camera, video or images in, depth out.
#[derive(Debug, Parser)]
#[command(name = "imexdepth", version, about)]
pub struct Cli {
    /// More log output on stderr (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Latency per pipeline stage with percentiles; --compare runs configurations
    /// interleaved and prints ratios.
    Bench(bench::BenchArgs),
    /// Depth for still images: 16-bit millimetre PNGs and colour pictures, a line per image.
    Infer(infer::InferArgs),
    /// Live depth from a camera, video or photographs: window or headless, with recording.
    Live(live::LiveArgs),
    /// ONNX Runtime library (path, version, providers), GPUs, and the models in models/.
    Info(info::InfoArgs),
    /// Run the chosen engine and the native engine on synthetic inputs and real photographs;
    /// fail past the tolerance.
    Validate(validate::ValidateArgs),
}

/// Model and engine selection, shared by every command that runs a model.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Model file (ONNX with imexdepth metadata).
    #[arg(long, default_value = "models/imexnet-depth-240x320.onnx")]
    pub model: PathBuf,
    /// Engine: auto (ONNX Runtime if its library is found, else native), ort, native.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// ONNX Runtime execution provider: auto (TensorRT, then CUDA, then CPU), tensorrt, cuda,
    /// cpu. An explicitly requested provider that cannot be used is an error.
    #[arg(long, value_enum, default_value_t = ProviderChoice::Auto)]
    pub ep: ProviderChoice,
    /// ONNX Runtime shared library; default: ORT_DYLIB_PATH, then the project-local copy from
    /// the set-up script, then the system's library paths.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// TensorRT: build the engine in fp16 (checked against the native engine).
    #[arg(long)]
    pub fp16: bool,
    /// TensorRT: build the engine in int8; needs --calibration.
    #[arg(long, requires = "calibration")]
    pub int8: bool,
    /// TensorRT int8 calibration table (for example one in calibration/).
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
    /// TensorRT engine and timing cache folder; default: <user cache dir>/imexdepth/tensorrt.
    #[arg(long, value_name = "DIR")]
    pub trt_cache: Option<PathBuf>,
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            engine: self.engine,
            provider: self.ep,
            ort_lib: self.ort_lib.clone(),
            fp16: self.fp16,
            int8: self.int8,
            calibration: self.calibration.clone(),
            trt_cache: self.trt_cache.clone(),
            threads: None,
        }
    }
}
