//! Choosing and opening an engine for a model file: `--engine auto|ort|native` and
//! `--ep auto|tensorrt|cuda|cpu`.
//!
//! - `native`: the Rust engine.
//! - `ort`: ONNX Runtime; an error if the library cannot be found or loaded.
//! - `auto` (default): ONNX Runtime if a library is found, else the native engine, said once
//!   with a warning. A library that is found but cannot be loaded (too old, broken) also falls
//!   back with a warning, unless a provider was named with `--ep`.
//!
//! An explicitly requested provider (`--ep tensorrt|cuda|cpu`) means ONNX Runtime: if it cannot be
//! used that is an error, never a silent fallback to another provider or engine.

use std::path::{Path, PathBuf};
use std::sync::Once;

use super::DepthEngine;

/// Which engine runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// ONNX Runtime if a library is found, else the native engine (said once).
    Auto,
    /// ONNX Runtime; an error if it cannot be loaded.
    Ort,
    /// The native Rust engine (exact reference, CPU).
    Native,
}

/// Which ONNX Runtime execution provider runs the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
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
    /// TensorRT int8 (needs `calibration`).
    pub int8: bool,
    /// INT8 calibration table.
    pub calibration: Option<PathBuf>,
    /// TensorRT engine and timing cache root instead of `<user cache>/imexdepth/tensorrt`.
    pub trt_cache: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (`None`: one per core).
    pub threads: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            engine: EngineChoice::Auto,
            provider: ProviderChoice::Auto,
            ort_lib: None,
            fp16: false,
            int8: false,
            calibration: None,
            trt_cache: None,
            threads: None,
        }
    }
}

impl EngineOptions {
    /// The same options in fp32: what to reopen with when live validation finds an fp16 or int8
    /// engine producing NaN, blank or divergent frames.
    pub fn fp32(&self) -> EngineOptions {
        EngineOptions { fp16: false, int8: false, calibration: None, ..self.clone() }
    }

    /// The precision a TensorRT engine would be built in.
    pub fn precision(&self) -> super::parity::Precision {
        use super::parity::Precision;
        Precision::from_flags(self.fp16, self.int8)
    }
}

/// Errors while choosing or opening an engine.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[cfg(feature = "ort")]
    #[error(transparent)]
    Library(#[from] super::ort::library::LibraryError),
    #[cfg(feature = "ort")]
    #[error(transparent)]
    Ort(#[from] super::ort::OrtError),
    #[error("{what} needs ONNX Runtime, but this imexdepth was built without the `ort` feature")]
    OrtNotBuilt { what: &'static str },
    #[error("{flag} needs ONNX Runtime with TensorRT, not the native engine")]
    NativePrecision { flag: &'static str },
}

/// Opens `model` with the engine the options ask for, searching for the ONNX Runtime library in
/// the default places.
pub fn open(model: &Path, options: &EngineOptions) -> Result<Box<dyn DepthEngine>, OpenError> {
    #[cfg(feature = "ort")]
    {
        let search = super::ort::library::LibrarySearch::new(options.ort_lib.as_deref());
        open_with(model, options, &search)
    }
    #[cfg(not(feature = "ort"))]
    {
        open_without_ort(model, options)
    }
}

/// The native engine for `model`.
pub fn open_native(model: &Path) -> Result<Box<dyn DepthEngine>, OpenError> {
    Ok(Box::new(super::native::NativeEngine::open(model)?))
}

fn native_checked(
    model: &Path,
    options: &EngineOptions,
) -> Result<Box<dyn DepthEngine>, OpenError> {
    if options.engine == EngineChoice::Native && options.provider != ProviderChoice::Auto {
        tracing::warn!("--ep {:?} is ignored: the native engine runs on the CPU", options.provider);
    }
    if options.int8 {
        return Err(OpenError::NativePrecision { flag: "--int8" });
    }
    if options.fp16 {
        return Err(OpenError::NativePrecision { flag: "--fp16" });
    }
    open_native(model)
}

/// Says once per process that the native engine stands in for ONNX Runtime, and why.
fn warn_fallback_once(reason: &dyn std::error::Error) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            "using the native engine: {} (--engine auto)",
            super::parity::error_chain(reason)
        );
    });
}

#[cfg(not(feature = "ort"))]
fn open_without_ort(
    model: &Path,
    options: &EngineOptions,
) -> Result<Box<dyn DepthEngine>, OpenError> {
    match (options.engine, options.provider) {
        (EngineChoice::Ort, _) => Err(OpenError::OrtNotBuilt { what: "--engine ort" }),
        (EngineChoice::Auto, ProviderChoice::Auto) => {
            let reason = OpenError::OrtNotBuilt { what: "the ONNX Runtime engine" };
            warn_fallback_once(&reason);
            native_checked(model, options)
        }
        (EngineChoice::Auto, _) => Err(OpenError::OrtNotBuilt { what: "--ep" }),
        (EngineChoice::Native, _) => native_checked(model, options),
    }
}

/// What `open_with` decided, before opening anything.
#[cfg(feature = "ort")]
#[derive(Debug)]
pub enum Decision {
    Native,
    /// Native because ONNX Runtime is unavailable; the reason is logged once.
    NativeFallback(super::ort::library::LibraryError),
    Ort(&'static super::ort::library::Runtime),
}

/// Decides which engine runs, loading the library if ONNX Runtime may be used.
#[cfg(feature = "ort")]
pub fn decide(
    options: &EngineOptions,
    search: &super::ort::library::LibrarySearch,
) -> Result<Decision, OpenError> {
    use super::ort::library::{LibraryError, Runtime};
    if options.engine == EngineChoice::Native {
        return Ok(Decision::Native);
    }
    let may_fall_back =
        options.engine == EngineChoice::Auto && options.provider == ProviderChoice::Auto;
    match Runtime::load(search) {
        Ok(runtime) => Ok(Decision::Ort(runtime)),
        // A library named by flag or environment that is missing is a user error even in auto.
        Err(err @ LibraryError::Missing { .. }) => Err(err.into()),
        Err(err) if may_fall_back => Ok(Decision::NativeFallback(err)),
        Err(err) => Err(err.into()),
    }
}

/// [`open`] with an explicit library search (tests use one that finds nothing).
#[cfg(feature = "ort")]
pub fn open_with(
    model: &Path,
    options: &EngineOptions,
    search: &super::ort::library::LibrarySearch,
) -> Result<Box<dyn DepthEngine>, OpenError> {
    match decide(options, search)? {
        Decision::Native => native_checked(model, options),
        Decision::NativeFallback(reason) => {
            warn_fallback_once(&reason);
            native_checked(model, options)
        }
        Decision::Ort(runtime) => {
            let engine = super::ort::OrtEngine::open(runtime, model, &ort_options(options))?;
            Ok(Box::new(engine))
        }
    }
}

/// The ONNX Runtime options for these engine options.
#[cfg(feature = "ort")]
pub fn ort_options(options: &EngineOptions) -> super::ort::OrtOptions {
    super::ort::OrtOptions {
        provider: options.provider,
        tensorrt: super::ort::tensorrt::TensorRtOptions {
            fp16: options.fp16,
            int8: options.int8,
            calibration: options.calibration.clone(),
            cache_root: options.trt_cache.clone(),
        },
        threads: options.threads,
        report_assignment: None,
    }
}

#[cfg(all(test, feature = "ort"))]
mod tests {
    use super::*;
    use crate::engine::ort::library::{LibraryError, LibrarySearch};

    #[test]
    fn auto_without_library_falls_back_to_native() {
        let options = EngineOptions::default();
        let decision = decide(&options, &LibrarySearch::nowhere()).unwrap();
        assert!(matches!(decision, Decision::NativeFallback(LibraryError::NotFound { .. })));
    }

    #[test]
    fn named_provider_without_library_is_an_error() {
        let options = EngineOptions { provider: ProviderChoice::Cuda, ..Default::default() };
        let err = decide(&options, &LibrarySearch::nowhere()).unwrap_err();
        assert!(matches!(err, OpenError::Library(LibraryError::NotFound { .. })), "{err}");
        let options = EngineOptions { engine: EngineChoice::Ort, ..Default::default() };
        assert!(decide(&options, &LibrarySearch::nowhere()).is_err());
    }

    #[test]
    fn missing_explicit_library_is_an_error_even_in_auto() {
        let search = LibrarySearch {
            explicit: Some("/nonexistent/libonnxruntime.so".into()),
            ..LibrarySearch::nowhere()
        };
        let err = decide(&EngineOptions::default(), &search).unwrap_err();
        assert!(matches!(err, OpenError::Library(LibraryError::Missing { .. })), "{err}");
    }

    #[test]
    fn native_choice_never_touches_the_library() {
        let options = EngineOptions { engine: EngineChoice::Native, ..Default::default() };
        assert!(matches!(decide(&options, &LibrarySearch::nowhere()), Ok(Decision::Native)));
        let options = EngineOptions { fp16: true, ..options };
        let err = native_checked(Path::new("m.onnx"), &options).err().unwrap();
        assert!(matches!(err, OpenError::NativePrecision { flag: "--fp16" }));
    }
}
