//! Shrinking a failing draw: try smaller variants (fewer faults, fewer steps, less data,
//! fewer options, default settings, one card, a plain VM) and keep each one that still
//! fails the same way, until none does or the run budget is spent. The result is the
//! scenario a person reads first.

use serde_json::Value;

use super::{signature, ExploreOptions};
use crate::paths::Paths;
use crate::scenario::parse;
use crate::scenario::run::{RunOptions, ScenarioResult};

/// Returns the smallest failing variant found and the runs it took.
pub fn shrink(
    drawn: &Value,
    failed: &ScenarioResult,
    paths: &Paths,
    opts: &ExploreOptions,
    budget: u32,
) -> (Value, u32) {
    let mut best = drawn.clone();
    let Some(want) = signature(failed) else {
        return (best, 0);
    };
    let mut runs = 0;
    'outer: loop {
        for cand in candidates(&best) {
            if runs >= budget || crate::signals::interrupted() {
                break 'outer;
            }
            let Ok(c) = parse(&cand.to_string(), "shrink candidate") else {
                continue;
            };
            runs += 1;
            let ropts = RunOptions {
                results: opts.results.join("shrink"),
                ..opts.run.clone()
            };
            let r =
                crate::scenario::run::run(&c, std::path::Path::new("shrink.json"), paths, &ropts);
            let same = signature(&r).as_deref() == Some(want.as_str());
            eprintln!(
                "  shrink run {runs}: {}",
                if same {
                    "still fails: kept"
                } else {
                    "passes or fails otherwise"
                }
            );
            if same {
                best = cand;
                continue 'outer;
            }
        }
        break;
    }
    (best, runs)
}

/// Smaller variants of `v`, the biggest cuts first.
pub fn candidates(v: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let len = |k: &str| v.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    // Without one fault.
    for i in 0..len("faults") {
        let mut c = v.clone();
        if let Some(a) = c["faults"].as_array_mut() {
            a.remove(i);
        }
        out.push(c);
    }
    // Without one step (a scenario keeps at least one).
    if len("steps") > 1 {
        for i in 0..len("steps") {
            let mut c = v.clone();
            if let Some(a) = c["steps"].as_array_mut() {
                a.remove(i);
            }
            out.push(c);
        }
    }
    // One card fewer, when nothing names the second.
    let text = v.to_string();
    if len("cards") > 1 && !text.contains("\"card\":1") && !text.contains("/dev/acq1") {
        let mut c = v.clone();
        if let Some(a) = c["cards"].as_array_mut() {
            a.truncate(1);
        }
        out.push(c);
    }
    // Half the data of a step (byte positions inside it scale along, or it is refused).
    for i in 0..len("steps") {
        for kind in ["stream", "play"] {
            if let Some(b) = v["steps"][i][kind]["bytes"]
                .as_u64()
                .filter(|b| *b > 1 << 20)
            {
                let mut c = v.clone();
                c["steps"][i][kind]["bytes"] = (b / 2).into();
                for k in ["restart_at", "pause_at", "reopen_at"] {
                    if let Some(x) = c["steps"][i][kind][k].as_u64() {
                        c["steps"][i][kind][k] = (x / 2).into();
                    }
                }
                if let Some(list) = c["steps"][i][kind]["control"].as_array_mut() {
                    for a in list {
                        if let Some(x) = a["at"]["bytes"].as_u64() {
                            a["at"]["bytes"] = (x / 2).into();
                        }
                    }
                }
                out.push(c);
            }
        }
    }
    // One control action fewer (the whole list goes with the step's other options).
    for i in 0..len("steps") {
        let n = v["steps"][i]["stream"]["control"]
            .as_array()
            .map_or(0, Vec::len);
        if n > 1 {
            for k in 0..n {
                let mut c = v.clone();
                if let Some(a) = c["steps"][i]["stream"]["control"].as_array_mut() {
                    a.remove(k);
                }
                out.push(c);
            }
        }
    }
    // One option of a step fewer.
    for i in 0..len("steps") {
        for kind in ["stream", "play"] {
            if let Some(o) = v["steps"][i][kind].as_object() {
                for k in o.keys() {
                    if matches!(k.as_str(), "card" | "bytes" | "mode" | "timeout_s") {
                        continue;
                    }
                    let mut c = v.clone();
                    if let Some(m) = c["steps"][i][kind].as_object_mut() {
                        m.remove(k);
                        if k == "pause_at" {
                            m.remove("pause_ms");
                        }
                    }
                    out.push(c);
                }
            }
        }
    }
    // One device setting back to its default.
    for i in 0..len("cards") {
        if let Some(o) = v["cards"][i]["device"].as_object() {
            for k in o.keys() {
                let mut c = v.clone();
                if let Some(m) = c["cards"][i]["device"].as_object_mut() {
                    m.remove(k);
                }
                out.push(c);
            }
        }
        for k in ["fifo_depth", "msix_vectors"] {
            if v["cards"][i].get(k).is_some() {
                let mut c = v.clone();
                if let Some(m) = c["cards"][i].as_object_mut() {
                    m.remove(k);
                }
                out.push(c);
            }
        }
    }
    // A plain VM.
    if let Some(o) = v["vm"].as_object() {
        for (k, plain) in [
            ("kernel_args", Value::Array(vec![])),
            ("viommu", Value::Bool(false)),
            ("cpus", Value::from(2)),
        ] {
            if o.get(k).is_some_and(|x| *x != plain) {
                let mut c = v.clone();
                c["vm"][k] = plain;
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::gen;

    #[test]
    fn every_candidate_is_smaller_and_most_are_valid() {
        for seed in 0..50 {
            let v = gen::draw(seed).1;
            let size = v.to_string().len();
            let c = candidates(&v);
            let valid = c
                .iter()
                .filter(|c| parse(&c.to_string(), "t").is_ok())
                .count();
            assert!(
                c.iter().all(|c| *c != v),
                "seed {seed}: a candidate equal to its draw"
            );
            assert!(c.is_empty() || valid > 0, "seed {seed}: no valid candidate");
            assert!(
                c.iter().all(|c| c.to_string().len() <= size + 16),
                "seed {seed}"
            );
        }
    }
}
