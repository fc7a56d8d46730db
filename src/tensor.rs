//! Dense float32 tensors in NCHW layout, the currency between preprocess, engines and
//! postprocess.

/// A dense NCHW float32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// `[N, C, H, W]`.
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: [usize; 4]) -> Self {
        Self { shape, data: vec![0.0; shape.iter().product()] }
    }

    /// Wraps `data`; panics if its length is not the product of `shape` (internal contract).
    pub fn from_vec(shape: [usize; 4], data: Vec<f32>) -> Self {
        let expected: usize = shape.iter().product();
        assert_eq!(data.len(), expected, "tensor data length for shape {shape:?}");
        Self { shape, data }
    }

    pub fn n(&self) -> usize {
        self.shape[0]
    }
    pub fn c(&self) -> usize {
        self.shape[1]
    }
    pub fn h(&self) -> usize {
        self.shape[2]
    }
    pub fn w(&self) -> usize {
        self.shape[3]
    }

    /// The `H x W` plane of batch `n`, channel `c`.
    pub fn plane(&self, n: usize, c: usize) -> &[f32] {
        let hw = self.h() * self.w();
        let start = (n * self.c() + c) * hw;
        &self.data[start..start + hw]
    }
}
