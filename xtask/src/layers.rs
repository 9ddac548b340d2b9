//! `cargo xtask layers` and `cargo xtask package`: the workspace's layering
//! rules (docs/architecture.md), checked, and every library crate packaged
//! as it would be published.

use std::path::Path;
use std::process::Command;

use crate::{cargo, root, step, with_libtorch};

/// Every workspace crate with its layer (docs/architecture.md): 0 traits,
/// 1 mathematics, 2 backends, 3 optimizer, 4 integration, 5 test support
/// and the examples' library, 6 programs built on it. A crate may depend
/// (normally) only on lower layers.
const LAYERS: &[(&str, u8)] = &[
    ("lmo-core", 0),
    ("lmo-comm", 1),
    ("orthogonalize", 1),
    ("brox", 1),
    ("lmo-problems", 1),
    ("lmo-ndarray", 2),
    ("lmo-cuda", 2),
    ("gluon-optim", 3),
    ("lmo-tch", 4),
    ("lmo-testkit", 5),
    ("lmo-dist-tests", 5),
    ("lmo-examples", 5),
    ("nanogpt", 6),
    ("lmo-bench", 6),
    ("xtask", 6),
];

/// The generic crates: no non-optional normal dependency on a backend.
const GENERIC: &[&str] = &["lmo-comm", "orthogonalize", "brox", "gluon-optim"];

/// The library crates, in dependency order, that `cargo xtask package`
/// packages (and verifies) as `cargo publish` would.
pub const PUBLISHED: &[&str] = &[
    "lmo-core",
    "lmo-comm",
    "orthogonalize",
    "brox",
    "lmo-problems",
    "lmo-ndarray",
    "lmo-cuda",
    "gluon-optim",
    "lmo-tch",
];

fn layer(name: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
}

/// The violations of the layering rules in `cargo metadata`'s JSON.
fn violations(meta: &serde_json::Value) -> Vec<String> {
    let mut bad = Vec::new();
    let empty = Vec::new();
    let packages = meta["packages"].as_array().unwrap_or(&empty);
    let ours: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        let Some(own) = layer(name) else {
            bad.push(format!(
                "{name}: not in the layer table (xtask/src/layers.rs, docs/architecture.md)"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().unwrap_or(&empty) {
            let dep = d["name"].as_str().unwrap_or("?");
            if !d["kind"].is_null() || !ours.contains(&dep) {
                continue; // dev/build dependencies, or not ours
            }
            let Some(l) = layer(dep) else { continue };
            if l >= own {
                bad.push(format!(
                    "{name} (layer {own}) depends on {dep} (layer {l}): a crate imports only lower layers"
                ));
            }
            let optional = d["optional"].as_bool().unwrap_or(false);
            if GENERIC.contains(&name) && l == 2 && !optional {
                bad.push(format!(
                    "{name} is generic but depends on the backend {dep} (make it a dev-dependency)"
                ));
            }
        }
    }
    bad
}

/// `file:line` of every `TypeId` or `downcast` in the Rust sources under
/// `dir`.
fn type_switches(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            type_switches(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && let Ok(text) = std::fs::read_to_string(&p)
        {
            for (i, line) in text.lines().enumerate() {
                if line.contains("TypeId") || line.contains("downcast") {
                    out.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
}

/// Checks the layering: the layer table against `cargo metadata`, `cargo
/// tree -e normal` of the generic crates free of lmo-ndarray, and no
/// `TypeId`/`downcast` under `crates/`.
pub fn layers() -> Result<(), String> {
    println!("==> layers: each crate imports only lower layers (docs/architecture.md)");
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let mut bad = violations(&meta);
    for krate in GENERIC {
        let out = cargo()
            .args(["tree", "-e", "normal", "--prefix", "none", "-p", krate])
            .output()
            .map_err(|e| format!("cargo tree: {e}"))?;
        let tree = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || tree.lines().any(|l| l.starts_with("lmo-ndarray ")) {
            bad.push(format!(
                "cargo tree -e normal -p {krate} shows lmo-ndarray (or failed)"
            ));
        }
    }
    let mut switches = Vec::new();
    type_switches(&root().join("crates"), &mut switches);
    bad.extend(
        switches
            .into_iter()
            .map(|s| format!("TypeId/downcast chooses behaviour (use a trait): {s}")),
    );
    if bad.is_empty() {
        println!(
            "    ok: {} crates in {} layers; {} free of lmo-ndarray; no TypeId/downcast",
            LAYERS.len(),
            LAYERS.iter().map(|(_, l)| l).max().map_or(0, |m| m + 1),
            GENERIC.join(", ")
        );
        Ok(())
    } else {
        Err(format!("layering violated:\n  {}", bad.join("\n  ")))
    }
}

/// `cargo package` of every published library crate in dependency order
/// (local crates resolve to each other's packages), each verified by a
/// build from its packaged sources.
pub fn package() -> Result<(), String> {
    let stale = clear_stale_overlay_sources()? + clear_our_fingerprints()?;
    if stale > 0 {
        eprintln!("    removed {stale} stale unpacked source(s)/fingerprint(s) of our crates");
    }
    let mut c: Command = cargo();
    c.arg("package");
    for p in PUBLISHED {
        c.args(["-p", p]);
    }
    with_libtorch(&mut c)?;
    step(&format!("cargo package ({})", PUBLISHED.join(", ")), c)
}

/// `cargo package` verifies each crate against its siblings' packages
/// through a local registry overlay, and cargo unpacks those `.crate` files
/// into `$CARGO_HOME/registry/src/<overlay hash>/<name>-<version>` only when
/// that folder does not exist yet. A folder left by an earlier packaging of
/// the same version (another commit, same path) is then reused as is, and
/// the verification builds against stale sources. Remove our own crates'
/// folders from every overlay (every folder under `registry/src` that is not
/// a crates.io index, whose names start with `index.`) so each run unpacks
/// what it just packaged. Returns how many folders were removed.
fn clear_stale_overlay_sources() -> Result<usize, String> {
    let home = match std::env::var_os("CARGO_HOME") {
        Some(h) => std::path::PathBuf::from(h),
        None => match std::env::var_os("HOME") {
            Some(h) => Path::new(&h).join(".cargo"),
            None => return Ok(0),
        },
    };
    let src = home.join("registry").join("src");
    let Ok(overlays) = std::fs::read_dir(&src) else {
        return Ok(0);
    };
    let mut removed = 0;
    for overlay in overlays.flatten() {
        if overlay.file_name().to_string_lossy().starts_with("index.") {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(overlay.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if PUBLISHED.iter().any(|p| is_version_of(&name, p)) {
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The verification builds the overlay's copies of our crates into the
/// workspace's `target/debug`, and cargo fingerprints registry crates by
/// name and version only, so a copy built by an earlier run would be reused
/// although its sources changed. Remove our crates' fingerprints (path and
/// overlay copies alike: their names do not tell them apart) so they are
/// rebuilt; third-party dependencies keep theirs. Returns how many folders
/// were removed.
fn clear_our_fingerprints() -> Result<usize, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let fp = target.join("debug").join(".fingerprint");
    let Ok(entries) = std::fs::read_dir(&fp) else {
        return Ok(0);
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Fingerprint folders are `<name>-<16 hex digits>`.
        let ours = PUBLISHED.iter().any(|p| {
            name.strip_prefix(p)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        if ours {
            std::fs::remove_dir_all(e.path())
                .map_err(|err| format!("removing {}: {err}", e.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Whether the folder name `dir` is `<krate>-<version>` (version starting
/// with a digit), so that `lmo-core` does not match `lmo-core-extra-1.0`.
fn is_version_of(dir: &str, krate: &str) -> bool {
    dir.strip_prefix(krate)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(deps: &[(&str, &str, Option<&str>, bool)]) -> serde_json::Value {
        let mut pk: Vec<serde_json::Value> = LAYERS
            .iter()
            .map(|(n, _)| serde_json::json!({"name": n, "dependencies": []}))
            .collect();
        for (from, to, kind, optional) in deps {
            let p = pk.iter_mut().find(|p| p["name"] == *from).unwrap();
            p["dependencies"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": to, "kind": kind, "optional": optional}));
        }
        serde_json::json!({ "packages": pk })
    }

    #[test]
    fn overlay_folders_match_name_and_version_only() {
        assert!(is_version_of("lmo-core-0.1.0", "lmo-core"));
        assert!(is_version_of("lmo-core-12.3.4-alpha", "lmo-core"));
        assert!(!is_version_of("lmo-core-extra-1.0", "lmo-core"));
        assert!(!is_version_of("lmo-comm-0.1.0", "lmo-core"));
        assert!(!is_version_of("lmo-core", "lmo-core"));
    }

    #[test]
    fn upward_and_backend_dependencies_are_reported() {
        assert!(violations(&meta(&[("gluon-optim", "orthogonalize", None, false)])).is_empty());
        // Dev-dependencies and optional backends of the optimizer are fine.
        assert!(
            violations(&meta(&[("gluon-optim", "lmo-ndarray", Some("dev"), false)])).is_empty()
        );
        assert!(violations(&meta(&[("gluon-optim", "lmo-cuda", None, true)])).is_empty());
        let up = violations(&meta(&[("lmo-cuda", "gluon-optim", None, false)]));
        assert_eq!(up.len(), 1, "{up:?}");
        let be = violations(&meta(&[("gluon-optim", "lmo-ndarray", None, false)]));
        assert_eq!(be.len(), 1, "{be:?}");
        let same = violations(&meta(&[("brox", "orthogonalize", None, false)]));
        assert_eq!(same.len(), 1, "{same:?}");
        let mut unknown = meta(&[]);
        unknown["packages"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "lmo-new", "dependencies": []}));
        assert_eq!(violations(&unknown).len(), 1);
    }

    #[test]
    fn type_switches_are_found() {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(
            dir.join("a/x.rs"),
            "fn f() {}\nlet t = TypeId::of::<u8>();\n",
        )
        .unwrap();
        std::fs::write(dir.join("a/y.txt"), "TypeId").unwrap();
        let mut out = Vec::new();
        type_switches(&dir, &mut out);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(out.len(), 1);
        assert!(
            out[0].ends_with("x.rs:2: let t = TypeId::of::<u8>();"),
            "{}",
            out[0]
        );
    }
}
