//! Command-line interface: argument definitions and the wiring of library parts per command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use imexdepth::engine::select::{EngineChoice, EngineOptions, ProviderChoice};

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
}

impl EngineArgs {
    pub fn options(&self) -> EngineOptions {
        EngineOptions {
            engine: self.engine,
            provider: self.ep,
            ort_lib: self.ort_lib.clone(),
            fp16: self.fp16,
        }
    }
}
