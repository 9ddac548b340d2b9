//! Shared pieces of the fuzz targets: reading shapes, scalars and bit
//! patterns from the fuzzer's bytes, and the checks every target makes
//! (the error contract of the project: finite input never yields NaN/Inf,
//! bad input is a typed error that leaves outputs untouched, no panics).

use ndarray::{ArrayD, IxDyn};

/// Reads values off the fuzzer's bytes; past the end everything is 0.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Whether bytes are left.
    pub fn more(&self) -> bool {
        self.pos < self.data.len()
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// An arbitrary f64 bit pattern (NaN, ±Inf, subnormals, ±0 included).
    pub fn bits64(&mut self) -> f64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.byte();
        }
        f64::from_le_bytes(b)
    }

    /// A value: mostly "interesting" ones (0, ±1, tiny, huge, subnormal,
    /// NaN, Inf), else an arbitrary bit pattern.
    pub fn value(&mut self) -> f64 {
        const SPECIAL: [f64; 12] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            1e-40,
            1e-310,
            5e-324,
            1e300,
            -1e300,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
        ];
        match self.byte() {
            0..=31 => SPECIAL[self.below(SPECIAL.len())],
            32..=127 => (self.byte() as f64 - 128.0) / 16.0,
            _ => self.bits64(),
        }
    }

    /// Dims of rank 0 to 4, each in `0..=max`.
    pub fn dims(&mut self, max: usize) -> Vec<usize> {
        let rank = self.below(5);
        (0..rank).map(|_| self.below(max + 1)).collect()
    }

    /// An f64 tensor of `dims` filled from [`Input::value`].
    pub fn tensor64(&mut self, dims: &[usize]) -> ArrayD<f64> {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.value()).collect();
        ArrayD::from_shape_vec(IxDyn(dims), v).expect("n = product of dims")
    }

    /// An f32 tensor of `dims` (values beyond f32's range become ±Inf).
    pub fn tensor32(&mut self, dims: &[usize]) -> ArrayD<f32> {
        self.tensor64(dims).mapv(|v| v as f32)
    }
}

/// Whether every entry is finite.
pub fn finite<S: Copy + Into<f64>>(x: &ArrayD<S>) -> bool {
    x.iter().all(|&v| v.into().is_finite())
}

/// Bit-identical (NaN payloads included).
pub fn same_bits<S: Copy + Into<f64>>(a: &ArrayD<S>, b: &ArrayD<S>) -> bool {
    a.shape() == b.shape()
        && a
            .iter()
            .zip(b)
            .all(|(&x, &y)| x.into().to_bits() == y.into().to_bits())
}

/// The largest |entry| (0 for an empty tensor; NaN counts as Inf).
pub fn max_abs<S: Copy + Into<f64>>(x: &ArrayD<S>) -> f64 {
    x.iter().fold(0.0, |m, &v| {
        let a = v.into().abs();
        if a.is_nan() { f64::INFINITY } else { m.max(a) }
    })
}
