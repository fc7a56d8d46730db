//! Micro-benchmarks: the implicit solve against one 3x3 C->C convolution of the same engine
//! (the paper's "negligible cost" claim, as a ratio), and the full native forward pass.
//!
//! `cargo bench --bench imex`; ids carry the sizes (`C32/60x80`). Compare within one run.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use imexdepth::engine::DepthEngine;
use imexdepth::engine::native::{Conv2d, NativeEngine};
use imexdepth::imex::{Boundary, Kernel3, SolvePlan};
use imexdepth::tensor::Tensor;

fn values(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect()
}

fn solve_vs_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("solve_vs_conv3x3");
    for &(ch, h, w) in &[(32usize, 60usize, 80usize), (64, 30, 40)] {
        let id = format!("C{ch}/{h}x{w}");
        let x = values(ch * h * w);
        let mut out = vec![0.0f32; x.len()];
        let lap = [-1.0, -4.0, -1.0, -4.0, 20.0, -4.0, -1.0, -4.0, -1.0].map(|v: f32| v / 6.0);
        let kernels: Vec<Kernel3> = vec![lap; ch];
        for (name, boundary, pad) in
            [("solve_periodic", Boundary::Periodic, 0), ("solve_reflect8", Boundary::Reflect, 8)]
        {
            let plan = SolvePlan::new(&kernels, 1.0, 1.0, h, w, boundary, pad).unwrap();
            group.bench_function(BenchmarkId::new(name, &id), |b| {
                b.iter(|| plan.solve_image(&x, &mut out, true))
            });
        }
        let conv = Conv2d {
            weight: values(ch * ch * 9),
            bias: Some(values(ch)),
            cout: ch,
            cin: ch,
            kh: 3,
            kw: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let mut col = Vec::new();
        group.bench_function(BenchmarkId::new("conv3x3", &id), |b| {
            b.iter(|| conv.run(&x, h, w, &mut out, &mut col))
        });
    }
    group.finish();
}

fn forward(c: &mut Criterion) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut group = c.benchmark_group("forward_native");
    group.sample_size(10);
    for name in ["imexnet-depth-240x320", "resnet-depth-240x320"] {
        let path = root.join("models").join(format!("{name}.onnx"));
        let Ok(mut engine) = NativeEngine::open(&path) else {
            eprintln!("skipping {name}: {} not found", path.display());
            continue;
        };
        let shape = engine.model().input.shape;
        let input = Tensor::from_vec(
            shape,
            values(shape.iter().product()).iter().map(|v| v.abs()).collect(),
        );
        group.bench_function(BenchmarkId::new(name, format!("{}x{}", shape[2], shape[3])), |b| {
            b.iter(|| engine.run(&input).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, solve_vs_conv, forward);
criterion_main!(benches);
