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

/// Polar Express per-step coefficients before the safety factor, in full
/// precision as published: Amsel, Persson, Musco & Gower, "The Polar
/// Express: optimal matrix sign methods and their application to the Muon
/// algorithm" (arXiv 2505.16932), Algorithm 1 (also
/// `github.com/NoahAmsel/PolarExpress`). The last triple,
/// `(15/8, −10/8, 3/8)`, repeats ("subsequent coeffs equal this
/// numerically").
pub const POLAR_EXPRESS: [[f64; 3]; 8] = [
    [8.28721201814563, -23.595886519098837, 17.300387312530933],
    [4.107059111542203, -2.9478499167379106, 0.5448431082926601],
    [3.9486908534822946, -2.908902115962949, 0.5518191394370137],
    [3.3184196573706015, -2.488488024314874, 0.51004894012372],
    [2.300652019954817, -1.6689039845747493, 0.4188073119525673],
    [1.891301407787398, -1.2679958271945868, 0.37680408948524835],
    [1.8750014808534479, -1.2500016453999487, 0.3750001645474248],
    [1.875, -1.25, 0.375],
];

/// Polar Express safety factor, applied as the reference applies it: every
/// triple of [`POLAR_EXPRESS`] but the last is divided by
/// `(1.01, 1.01³, 1.01⁵)`; the last (repeated) one is used as it is.
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
    /// The triple `(a, b, c)` used at step `i` (0-based). An empty
    /// [`CoefficientSet::Custom`] list, which [`NsConfig::validate`] refuses
    /// (so no iteration ever runs with it), gives the identity step
    /// `(1, 0, 0)` rather than a panic.
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
            CoefficientSet::Custom(v) => v
                .get(i.min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or([1.0, 0.0, 0.0]),
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

/// How the polynomial iteration is evaluated; both forms compute the same
/// polynomial of `X₀` in exact arithmetic (SPEC §2).
#[derive(Clone, Debug, PartialEq, Default)]
pub enum NsForm {
    /// Every step on the `k × l` iterate: `A = X·Xᵀ`, `X ← a·X + (b·A + c·A²)·X`.
    #[default]
    Plain,
    /// Gram Newton–Schulz: the steps run on `k × k` matrices
    /// (`k = min(m, n)`), `R = X·Xᵀ` formed once, `Z = b·R + c·R²`,
    /// `Q ← a·Q + Z·Q`, `R ← (a·I + Z)·R·(a·I + Z)`, and `X ← Q·X` applied
    /// at the end. Before each step index in `restarts` the iterate is
    /// re-formed (`X ← Q·X`, `R = X·Xᵀ`, `Q = I`), which removes the
    /// rounding drift of the tracked `R` (see `crate::NewtonSchulz`).
    /// Matrices with `max(m,n) < 2·min(m,n)` run the plain form, which
    /// needs fewer flops there.
    Gram {
        /// Step indices (strictly increasing, each in `1..steps`) before
        /// which the iterate is re-formed.
        restarts: Vec<usize>,
    },
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
    /// Plain or Gram evaluation ([`NsForm::Plain`] by default).
    pub form: NsForm,
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
            form: NsForm::Plain,
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

    /// Selects the Gram form with the default restarts,
    /// [`NsConfig::default_restarts`], for the configured number of steps
    /// (set the steps first).
    pub fn gram(mut self) -> Self {
        self.form = NsForm::Gram {
            restarts: Self::default_restarts(self.steps),
        };
        self
    }

    /// Selects the Gram form with restarts before the given step indices.
    pub fn gram_with_restarts(mut self, restarts: Vec<usize>) -> Self {
        self.form = NsForm::Gram { restarts };
        self
    }

    /// The default restarts of the Gram form for `steps` steps: one before
    /// every third step (`3, 6, 9, …`), so no more than three steps run on
    /// a tracked `R` without a re-formed Gram matrix; five steps restart
    /// once. Why three: each tracked step multiplies a rounding error of
    /// `R` by up to `a²` (`a ≈ 3.4` for the quintic sets), and each restart
    /// costs `3k²l` flops, about a quarter of the plain form's five steps at
    /// `l = 4k`. Measured (docs/orthogonalize.md, "Gram Newton–Schulz"):
    /// with this spacing the 5-step sets stay within 1 % of the plain
    /// form's error in f32 and f64; in bf16 a rank-deficient input reaches
    /// 1.2–3.2× the plain error (restarting every step: at most 2.2×).
    pub fn default_restarts(steps: usize) -> Vec<usize> {
        (1..steps).filter(|i| i % 3 == 0).collect()
    }

    /// Sets the normalization.
    pub fn with_normalization(mut self, n: Normalization) -> Self {
        self.normalization = n;
        self
    }

    /// Checks the hyper-parameters: steps ≥ 1, finite coefficients, a
    /// non-empty custom list, δ, ε finite and ≥ 0, Gram restarts strictly
    /// increasing in `1..steps`.
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
        if let NsForm::Gram { restarts } = &self.form
            && (restarts.iter().any(|&i| i == 0 || i >= self.steps)
                || restarts.windows(2).any(|w| w[0] >= w[1]))
        {
            return Err(LmoError::InvalidHyperParameter(
                "Gram restarts must be strictly increasing step indices in 1..steps",
            ));
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
