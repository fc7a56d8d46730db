//! imexdepth: live monocular depth with IMEXnet.
//!
//! Modules follow the data flow of the live pipeline:
//! `capture` (frame sources) -> `preprocess` -> `engine` (`native`, `ort`; the implicit solve in
//! `imex`) -> `temporal` -> `postprocess` (colour maps, overlays) -> `display` / `record`, with
//! `bench` and `calibration` beside them. The numeric core (`tensor`, `imex`, `engine::native`)
//! knows nothing of windows, cameras or ONNX Runtime.
// `deny`, not `forbid`: the one matrix-product call into `gemm` (engine::native::gemm) allows
// it locally, with a SAFETY comment.
#![deny(unsafe_code)]

pub mod bench;
pub mod capture;
pub mod display;
pub mod engine;
pub mod imex;
pub mod live;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod record;
pub mod tensor;
pub mod tolerance;
