//! Checkpoints of the device step in the CPU optimizer's format: an
//! [`OptState`] saved by [`crate::Optimizer::state`] loads into a
//! [`DeviceOptimizer`] with the same blocks, and the other way round.

use lmo_cuda::DType;

use super::{BlockPlan, DeviceError, DeviceOptimizer, Exec};
use crate::{BlockState, OptError, OptState};

impl<E: Exec> DeviceOptimizer<E> {
    /// The state (momenta, AdamW moments, counters) as an [`OptState`],
    /// the format of [`crate::Optimizer::state`]: per parameter, in order,
    /// its shape and buffers (LMO: the momentum; AdamW: m, v). Reads every
    /// buffer from the device (one copy per stack and per unstacked
    /// tensor).
    pub fn state(&self) -> Result<OptState, DeviceError> {
        let stacks: Vec<Vec<f32>> = self
            .stacks
            .iter()
            .map(|s| self.exec.to_host(&s.m))
            .collect::<Result<_, _>>()?;
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let mut blocks = Vec::with_capacity(self.plan.blocks.len());
        for (i, b) in self.plan.blocks.iter().enumerate() {
            let buffers = match b {
                BlockPlan::Lmo { stack, index } => {
                    let per: usize = self.dims[i].iter().product();
                    vec![f64s(&stacks[*stack][index * per..(index + 1) * per])]
                }
                BlockPlan::Elementwise { .. } => match &self.elems[i] {
                    Some(e) => vec![f64s(&self.exec.to_host(&e.m)?)],
                    None => Vec::new(),
                },
                BlockPlan::AdamW(_) => match &self.adam[i] {
                    Some(a) => vec![
                        f64s(&self.exec.to_host(&a.m)?),
                        f64s(&self.exec.to_host(&a.v)?),
                    ],
                    None => Vec::new(),
                },
            };
            blocks.push(BlockState {
                shape: self.dims[i].clone(),
                buffers,
            });
        }
        Ok(OptState {
            version: OptState::VERSION,
            step: self.step,
            skipped: self.skipped,
            blocks,
        })
    }

    /// Restores a state saved by [`DeviceOptimizer::state`] or
    /// [`crate::Optimizer::state`] from an optimizer with the same blocks.
    /// Checks everything before writing anything: the version, the number
    /// of blocks, each block's shape and buffer count and length, and that
    /// every value is finite once stored in the tensors' dtype ([`OptError::BadState`]). Values are
    /// rounded to the tensors' storage (bf16 tensors keep bf16 momenta).
    pub fn load_state(&mut self, s: &OptState) -> Result<(), DeviceError> {
        let bad = |why: String| DeviceError::Opt(OptError::BadState(why));
        if s.version != OptState::VERSION {
            return Err(bad(format!(
                "version {} (expected {})",
                s.version,
                OptState::VERSION
            )));
        }
        crate::validate::counters(s.step, s.skipped).map_err(DeviceError::Opt)?;
        if s.blocks.len() != self.plan.blocks.len() {
            return Err(bad(format!(
                "{} blocks, optimizer has {}",
                s.blocks.len(),
                self.plan.blocks.len()
            )));
        }
        for (i, (sb, b)) in s.blocks.iter().zip(&self.plan.blocks).enumerate() {
            let want = match b {
                BlockPlan::AdamW(_) => 2,
                _ => 1,
            };
            let numel: usize = self.dims[i].iter().product();
            if sb.shape != self.dims[i]
                || sb.buffers.len() != want
                || sb.buffers.iter().any(|v| v.len() != numel)
            {
                return Err(bad(format!("block {i}: shape or buffers differ")));
            }
            // Finite once stored (f32, or bf16, whose largest value is
            // below f32's).
            let stored = |x: f64| match self.dtype {
                DType::F32 => (x as f32).is_finite(),
                DType::Bf16 => half::bf16::from_f32(x as f32).is_finite(),
            };
            if sb.buffers.iter().flatten().any(|&x| !stored(x)) {
                return Err(bad(format!(
                    "block {i}: a buffer value is not finite in the tensors' storage"
                )));
            }
        }
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        for st in &mut self.stacks {
            let mut v = Vec::new();
            for &i in &st.plan.members {
                v.extend(s.blocks[i].buffers[0].iter().map(|&x| x as f32));
            }
            self.exec.write(&mut st.m, &v)?;
        }
        for (i, sb) in s.blocks.iter().enumerate() {
            if let Some(e) = &mut self.elems[i] {
                self.exec.write(&mut e.m, &f32s(&sb.buffers[0]))?;
            }
            if let Some(a) = &mut self.adam[i] {
                self.exec.write(&mut a.m, &f32s(&sb.buffers[0]))?;
                self.exec.write(&mut a.v, &f32s(&sb.buffers[1]))?;
            }
        }
        self.step = s.step;
        self.skipped = s.skipped;
        Ok(())
    }
}
