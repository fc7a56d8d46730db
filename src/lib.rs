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

pub mod tensor;
pub mod tolerance;
pub mod imex;
pub mod model;
pub mod capture;
pub mod engine;
pub mod preprocess;
pub mod postprocess;
pub mod display;
pub mod record;
pub mod live;
pub mod bench;
