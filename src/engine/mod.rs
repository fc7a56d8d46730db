//! Depth engines: something that maps a preprocessed input tensor to the model's output tensor.
//!
//! `native` rebuilds the network from the model file's architecture description and runs it in
//! Rust (the exact reference); `ort` runs the ONNX graph through ONNX Runtime.

use crate::tensor::Tensor;

/// An engine that runs one loaded model.
pub trait DepthEngine: Send {
    /// `"native"` or `"ort"`.
    fn name(&self) -> &str;
    /// The execution provider that really runs the model (`"cpu"`, `"cuda"`, `"tensorrt"`, or
    /// a mixture such as `"tensorrt+cpu"`).
    fn provider(&self) -> String;
    /// Runs the model on one NCHW input of the model's input shape.
    fn run(&mut self, input: &Tensor) -> Result<Tensor, EngineError>;
}

/// Errors while running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("input shape {found:?} does not match the model's input shape {expected:?}")]
    InputShape { expected: [usize; 4], found: [usize; 4] },
    #[error("ONNX Runtime failed: {message}")]
    Runtime {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

pub mod checked;
pub mod gpu;
pub mod native;
#[cfg(feature = "ort")]
pub mod ort;
pub mod parity;
pub mod select;
