//! The model's own fill rate against the host's memset and memcpy (`acq-device bench`).

use super::*;

/// `acq-device bench` on the host: the engine's fill rate next to memset and memcpy.
pub(super) fn model_fill(paths: &Paths) -> Result<Vec<ModelFill>> {
    let out = Command::new(&paths.device_model)
        .args([
            "bench",
            "--patterns",
            "counter",
            "--seconds",
            "1",
            "--repeat",
            "3",
        ])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .with_context(|| format!("running {} bench", paths.device_model.display()))?;
    if !out.status.success() {
        bail!(
            "acq-device bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(parse_model_bench(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses the text `acq-device bench` prints: a `block N B x ...` header per block size,
/// then `host memset  X GB/s`, `host memcpy ...`, `engine counter ...` lines.
pub fn parse_model_bench(text: &str) -> Vec<ModelFill> {
    let mut out = Vec::new();
    let mut cur: Option<ModelFill> = None;
    let gbps = |l: &str| -> Option<f64> {
        let mut it = l.split_whitespace();
        let i = it.position(|w| w == "GB/s")?;
        l.split_whitespace().nth(i.checked_sub(1)?)?.parse().ok()
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("block ") {
            if let Some(c) = cur.take() {
                out.push(c);
            }
            let block = rest
                .split_whitespace()
                .next()
                .and_then(|b| b.parse().ok())
                .unwrap_or(0);
            cur = Some(ModelFill {
                block,
                memset_gbps: 0.0,
                memcpy_gbps: 0.0,
                engine_gbps: 0.0,
            });
        } else if let Some(c) = cur.as_mut() {
            let v = gbps(l).unwrap_or(0.0);
            if l.starts_with("host memset") {
                c.memset_gbps = v;
            } else if l.starts_with("host memcpy") {
                c.memcpy_gbps = v;
            } else if l.starts_with("engine counter") {
                c.engine_gbps = v;
            }
        }
    }
    out.extend(cur);
    out
}
