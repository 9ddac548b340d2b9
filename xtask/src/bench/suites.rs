//! Benchmark suites. A suite is one value of [`Suite`]: the arguments that
//! our runner (`lmo-bench`) and the Python peers (`bench/peers/peers.py`)
//! get for each case. Adding a suite = adding one entry to [`all`] (plus
//! its implementation in lmo-bench and, if it has peers, in peers.py).

/// One unit of work: our runner's arguments and, if the case has peers,
/// the peers script's arguments and which peers measure it (each peer runs
/// in a process of its own: OpenBLAS's and OpenMP's worker threads spin
/// after each call and would slow whichever library runs next in the same
/// process).
pub struct Case {
    pub label: String,
    pub ours: Vec<String>,
    pub peers: Option<Vec<String>>,
    pub peer_impls: &'static [&'static str],
}

pub struct Suite {
    pub name: &'static str,
    pub about: &'static str,
    pub cases: fn(quick: bool, reps: usize) -> Vec<Case>,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn per_shape(
    suite: &str,
    shapes: &[&str],
    extra: &[&str],
    reps: usize,
    peers: &'static [&'static str],
) -> Vec<Case> {
    shapes
        .iter()
        .map(|shape| {
            let mut a = s(&[suite, "--shapes", shape, "--reps"]);
            a.push(reps.to_string());
            a.extend(s(extra));
            Case {
                label: format!("{suite} {shape}"),
                ours: a.clone(),
                peers: (!peers.is_empty()).then_some(a),
                peer_impls: peers,
            }
        })
        .collect()
}

fn gemm(quick: bool, reps: usize) -> Vec<Case> {
    let shapes: &[&str] = if quick {
        &["128x128"]
    } else {
        &["768x768", "2048x2048", "4096x4096"]
    };
    per_shape("gemm", shapes, &[], reps, &["numpy", "torch"])
}

fn orth(quick: bool, reps: usize) -> Vec<Case> {
    if quick {
        return per_shape(
            "orth",
            &["64x64", "48x96"],
            &["--precisions", "f32,bf16", "--forms", "plain,gram"],
            reps,
            &["numpy", "torch"],
        );
    }
    // GPT-2's rectangular MLP shapes (both orientations) and a 1024×4096
    // next to the squares; ours in both Newton–Schulz forms.
    let shapes = [
        "768x768",
        "768x3072",
        "3072x768",
        "1024x4096",
        "1024x1024",
        "2048x2048",
        "4096x4096",
    ];
    per_shape(
        "orth",
        &shapes,
        &[
            "--sets",
            "muon",
            "--precisions",
            "f32,bf16",
            "--forms",
            "plain,gram",
        ],
        reps,
        &["numpy", "torch"],
    )
}

fn brox(quick: bool, reps: usize) -> Vec<Case> {
    let shapes: &[&str] = if quick {
        &["20x20"]
    } else {
        &["100x100", "500x500", "1000x1000"]
    };
    per_shape("brox", shapes, &[], reps, &["scipy"])
}

fn step(quick: bool, reps: usize) -> Vec<Case> {
    // "LxD": L layers of width D (GPT-2 small: 12x768).
    let shapes: &[&str] = if quick { &["2x64"] } else { &["12x768"] };
    per_shape("step", shapes, &[], reps.min(3), &["torch"])
}

/// The GPU suites (our side needs lmo-bench built with `--features cuda`;
/// peers: PyTorch on CUDA): the bf16 GEMM peak, NS5 polar factors in bf16
/// (ours vs K. Jordan's reference eager and compiled), one Muon / AdamW
/// step on GPT-2-small hidden shapes.
fn gpu(quick: bool, reps: usize) -> Vec<Case> {
    let (gemm, orth, step): (&[&str], &[&str], &[&str]) = if quick {
        (&["256x256"], &["64x64", "96x48"], &["1x64"])
    } else {
        (
            &["4096x4096", "8192x8192"],
            &[
                "768x768",
                "768x3072",
                "1024x1024",
                "4096x4096",
                "4096x11008",
                "8192x8192",
            ],
            &["12x768"],
        )
    };
    let mut v = per_shape("gpu-gemm", gemm, &[], reps, &["torch"]);
    v.extend(per_shape("gpu-orth", orth, &[], reps, &["torch"]));
    v.extend(per_shape("gpu-step", step, &[], reps, &["torch"]));
    v
}

/// Every suite, in the order they run.
pub fn all() -> Vec<Suite> {
    vec![
        Suite {
            name: "gemm",
            about: "sgemm/dgemm GFLOP/s (the roofline of every table)",
            cases: gemm,
        },
        Suite {
            name: "orth",
            about: "polar factor (Newton–Schulz) per set, precision, shape",
            cases: orth,
        },
        Suite {
            name: "brox",
            about: "exact trust-region subproblem vs scipy (n = 100, 500, 1000)",
            cases: brox,
        },
        Suite {
            name: "step",
            about: "one optimizer step on GPT-2-small shapes per preset vs torch AdamW / Muon",
            cases: step,
        },
        Suite {
            name: "gpu",
            about: "CUDA (not in the default set): bf16 GEMM peak, NS5 polar vs Jordan eager/compiled, Muon/AdamW step",
            cases: gpu,
        },
    ]
}
