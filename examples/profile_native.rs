//! Per-op wall time of the native engine on one model: `cargo run --release --example
//! profile_native -- MODEL [RUNS]`.

use imexdepth::engine::native::NativeEngine;
use imexdepth::tensor::Tensor;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: profile_native MODEL [RUNS]");
    let runs: usize = args.next().map_or(5, |r| r.parse().expect("RUNS is a number"));
    let mut engine = NativeEngine::open(path.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    let shape = engine.model().input.shape;
    let input = Tensor::from_vec(
        shape,
        (0..shape.iter().product::<usize>()).map(|i| (i % 255) as f32 / 255.0).collect(),
    );
    let mut totals = engine.profile(&input).unwrap();
    for _ in 1..runs {
        for (t, p) in totals.iter_mut().zip(engine.profile(&input).unwrap()) {
            t.2 += p.2;
        }
    }
    let mut by_op = std::collections::BTreeMap::<&str, f64>::new();
    for (op, shape, ms) in &totals {
        println!("{op:<12} {shape:?} {:.2} ms", ms / runs as f64);
        *by_op.entry(op).or_default() += ms / runs as f64;
    }
    for (op, ms) in by_op {
        println!("total {op:<12} {ms:.2} ms");
    }
}
