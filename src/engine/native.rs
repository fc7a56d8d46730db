//! Placeholder until the native engine lands (branch `native`); replaced wholesale by it.

use std::path::Path;

/// The native engine (not yet built on this branch).
pub struct NativeEngine;

impl NativeEngine {
    pub fn open(path: &Path) -> Result<Self, crate::model::ModelError> {
        Err(crate::model::ModelError::NotBuilt { path: path.to_path_buf() })
    }
}

impl super::DepthEngine for NativeEngine {
    fn name(&self) -> &str {
        "native"
    }
    fn provider(&self) -> String {
        "cpu".into()
    }
    fn run(&mut self, _input: &crate::tensor::Tensor) -> Result<crate::tensor::Tensor, super::EngineError> {
        unreachable!("placeholder engine is never opened")
    }
}
