//! Coefficient sets and normalization of the odd polynomial iterations
//! (SPEC §2).

use lmo_core::LmoError;

/// Muon's quintic (K. Jordan et al. 2024), used at every step:
/// `(a, b, c) = (3.4445, −4.7750, 2.0315)`. Deliberately inexact: output
/// singular values land roughly in `[0.7, 1.2]`.
pub const MUON_QUINTIC: [f64; 3] = [3.4445, -4.7750, 2.0315];

/// The classical cubic Newton–Schulz step `(1.5, −0.5, 0)`:
/// `X ← 1.5·X − 0.5·X·Xᵀ·X`, converging to `U·Vᵀ` for `σ ∈ (0, √3)`.
pub const CUBIC: [f64; 3] = [1.5, -0.5, 0.0];

/// Polar Express per-step coefficients (Amsel, Persson, Musco & Gower 2025,
/// arXiv 2505.16932), before the safety factor; the last one repeats.
pub const POLAR_EXPRESS: [[f64; 3]; 7] = [
    [8.28721, -23.59589, 17.30039],
    [4.10706, -2.94785, 0.54484],
    [3.94869, -2.90890, 0.55182],
    [3.31842, -2.48849, 0.51005],
    [2.30065, -1.66890, 0.41881],
    [1.89130, -1.26800, 0.37680],
    [1.87500, -1.25000, 0.37500],
];

/// Polar Express safety factor: every triple but the last is divided by
/// `(1.01, 1.01³, 1.01⁵)`.
pub const POLAR_EXPRESS_SAFETY: f64 = 1.01;

/// modded-nanogpt's per-step quintic (2025-02); the last one repeats.
pub const MODDED_NANOGPT: [[f64; 3]; 5] = [
    [4.0848, -6.8946, 2.9270],
    [3.9505, -6.3029, 2.6377],
    [3.7418, -5.5913, 2.3037],
    [2.8769, -3.1427, 1.2046],
    [2.8366, -3.0525, 1.2012],
];

/// Which odd polynomial `p(σ) = a·σ + b·σ³ + c·σ⁵` is applied at each step.
#[derive(Clone, Debug, PartialEq)]
pub enum CoefficientSet {
    /// [`MUON_QUINTIC`] at every step (default 5 steps, δ = 0).
    MuonQuintic,
    /// [`CUBIC`] at every step (δ = 0).
    Cubic,
    /// [`POLAR_EXPRESS`] with the safety factor, the last triple repeated
    /// (δ = 0.01, as the reference normalizes).
    PolarExpress,
    /// [`MODDED_NANOGPT`], the last triple repeated (δ = 0).
    ModdedNanogpt,
    /// User coefficients, one triple per step; the last one repeats if more
    /// steps are asked for.
    Custom(Vec<[f64; 3]>),
}

impl CoefficientSet {
    /// The triple `(a, b, c)` used at step `i` (0-based).
    pub fn step(&self, i: usize) -> [f64; 3] {
        fn at<const N: usize>(list: &[[f64; 3]; N], i: usize) -> [f64; 3] {
            list[i.min(N - 1)]
        }
        match self {
            CoefficientSet::MuonQuintic => MUON_QUINTIC,
            CoefficientSet::Cubic => CUBIC,
            CoefficientSet::PolarExpress => {
                let j = i.min(POLAR_EXPRESS.len() - 1);
                let [a, b, c] = POLAR_EXPRESS[j];
                if j + 1 == POLAR_EXPRESS.len() {
                    [a, b, c]
                } else {
                    let s = POLAR_EXPRESS_SAFETY;
                    [a / s, b / s.powi(3), c / s.powi(5)]
                }
            }
            CoefficientSet::ModdedNanogpt => at(&MODDED_NANOGPT, i),
            CoefficientSet::Custom(v) => v[i.min(v.len().saturating_sub(1))],
        }
    }

    /// The reference implementation's number of steps: 5 for the quintic
    /// sets, 5 for Polar Express (as Muon uses it), 24 for the cubic (enough
    /// for `σ_min/σ_max ≥ 10⁻⁴` in f64), the list length for `Custom`.
    pub fn default_steps(&self) -> usize {
        match self {
            CoefficientSet::Cubic => 24,
            CoefficientSet::Custom(v) => v.len(),
            _ => 5,
        }
    }

    /// The reference's normalization margin δ: 0.01 for Polar Express, else 0.
    pub fn default_delta(&self) -> f64 {
        if *self == CoefficientSet::PolarExpress {
            0.01
        } else {
            0.0
        }
    }

    /// A short name for tables (`muon`, `cubic`, `polar-express`, `nanogpt`, `custom`).
    pub fn name(&self) -> &'static str {
        match self {
            CoefficientSet::MuonQuintic => "muon",
            CoefficientSet::Cubic => "cubic",
            CoefficientSet::PolarExpress => "polar-express",
            CoefficientSet::ModdedNanogpt => "nanogpt",
            CoefficientSet::Custom(_) => "custom",
        }
    }
}

/// How the input is scaled before the iteration so that all `σ ≤ 1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Normalization {
    /// `X₀ = G / (‖G‖_F·(1 + δ) + ε)` (SPEC §2; Muon: δ = 0, ε = 1e-7;
    /// Polar Express: δ = 0.01). ε keeps the reference's behaviour on tiny
    /// gradients (their update shrinks); ε = 0 makes the map exactly
    /// scale-invariant, `polar(c·G) = polar(G)` for every `c > 0`.
    Frobenius {
        /// Relative margin δ ≥ 0.
        delta: f64,
        /// Absolute guard ε ≥ 0.
        eps: f64,
    },
    /// No scaling: the caller guarantees `σ_max(G) ≤ 1` (or within the
    /// polynomial's basin).
    None,
}

/// Configuration of a Newton–Schulz-type iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct NsConfig {
    /// The coefficient set.
    pub coefficients: CoefficientSet,
    /// Number of steps (≥ 1).
    pub steps: usize,
    /// Input normalization.
    pub normalization: Normalization,
}

impl NsConfig {
    /// The reference configuration of a coefficient set: its default steps,
    /// `Frobenius { delta: default_delta, eps: 1e-7 }`.
    pub fn new(coefficients: CoefficientSet) -> Self {
        let steps = coefficients.default_steps();
        let delta = coefficients.default_delta();
        NsConfig {
            coefficients,
            steps,
            normalization: Normalization::Frobenius { delta, eps: 1e-7 },
        }
    }

    /// Muon's NS5: [`CoefficientSet::MuonQuintic`], 5 steps, δ = 0, ε = 1e-7.
    pub fn muon() -> Self {
        Self::new(CoefficientSet::MuonQuintic)
    }

    /// Polar Express, 5 steps, δ = 0.01.
    pub fn polar_express() -> Self {
        Self::new(CoefficientSet::PolarExpress)
    }

    /// Sets the number of steps.
    pub fn with_steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Sets the normalization.
    pub fn with_normalization(mut self, n: Normalization) -> Self {
        self.normalization = n;
        self
    }

    /// Checks the hyper-parameters: steps ≥ 1, finite coefficients, a
    /// non-empty custom list, δ, ε finite and ≥ 0.
    pub fn validate(&self) -> Result<(), LmoError> {
        if self.steps == 0 {
            return Err(LmoError::InvalidHyperParameter(
                "Newton–Schulz steps must be ≥ 1",
            ));
        }
        if let CoefficientSet::Custom(v) = &self.coefficients {
            if v.is_empty() {
                return Err(LmoError::InvalidHyperParameter(
                    "custom coefficient list is empty",
                ));
            }
            if v.iter().flatten().any(|x| !x.is_finite()) {
                return Err(LmoError::InvalidHyperParameter(
                    "custom coefficients must be finite",
                ));
            }
        }
        if let Normalization::Frobenius { delta, eps } = self.normalization
            && !(delta.is_finite() && delta >= 0.0 && eps.is_finite() && eps >= 0.0)
        {
            return Err(LmoError::InvalidHyperParameter(
                "normalization δ and ε must be finite and ≥ 0",
            ));
        }
        Ok(())
    }
}
