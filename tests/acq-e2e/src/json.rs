//! Reading the guest tools' JSON result lines by field, not by substring: a substring test
//! matches a key inside a string, or the same key in another object (an errno count
//! versus an errno event), and passes for the wrong reason.

use serde_json::Value;

/// Every JSON object in a tool's output: the lines that parse as one (other lines, such
/// as progress or shell noise, are skipped).
pub fn json_values(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

/// The value at `key` in a tool's JSON output. `key` is a field name or a dotted path of
/// field names (`"card.underruns"`). In each JSON line the shallowest match counts (a bare
/// `"errors"` is the result's own field, not `stats.errors` of the driver's statistics
/// inside it; ask for `"stats.errors"` for that). `None` when nowhere; two matches at the
/// same depth, or in two lines, panic, naming the places: a test must not assert on
/// whichever came first.
pub fn json_field(text: &str, key: &str) -> Option<Value> {
    let path: Vec<&str> = key.split('.').collect();
    let mut found = Vec::new();
    for (line, v) in json_values(text).iter().enumerate() {
        let mut here = Vec::new();
        collect(v, &path, &mut format!("line {line}"), 0, &mut here);
        let shallowest = here.iter().map(|(_, depth, _)| *depth).min();
        found.extend(
            here.into_iter()
                .filter(|(_, depth, _)| Some(*depth) == shallowest)
                .map(|(at, _, v)| (at, v)),
        );
    }
    match found.len() {
        0 => None,
        1 => found.pop().map(|(_, v)| v),
        _ => {
            let places: Vec<String> = found.iter().map(|(at, v)| format!("{at} = {v}")).collect();
            panic!(
                "`{key}` is in {} places of the output ({}): give its path\n{text}",
                found.len(),
                places.join("; ")
            )
        }
    }
}

/// A place a path was found: where (`line N.a.b[2]: path`), how deep, and the value.
type Place = (String, usize, Value);

/// Every place under `v` (itself `depth` steps below the line's top) where `path` starts.
fn collect(v: &Value, path: &[&str], at: &mut String, depth: usize, found: &mut Vec<Place>) {
    let follow = path
        .iter()
        .try_fold(v, |node, k| node.as_object().and_then(|o| o.get(*k)));
    if let Some(hit) = follow {
        found.push((format!("{at}: {}", path.join(".")), depth, hit.clone()));
    }
    let len = at.len();
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                at.push('.');
                at.push_str(k);
                collect(child, path, at, depth + 1, found);
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push_str(&format!("[{i}]"));
                collect(child, path, at, depth + 1, found);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// True if `key` (a name or dotted path) is anywhere in the output, however many times.
pub fn json_has(text: &str, key: &str) -> bool {
    let path: Vec<&str> = key.split('.').collect();
    let mut found = Vec::new();
    for v in json_values(text) {
        collect(&v, &path, &mut String::new(), 0, &mut found);
    }
    !found.is_empty()
}

/// The number at `key` ([`json_field`]).
pub fn json_num(text: &str, key: &str) -> Option<f64> {
    json_field(text, key).and_then(|v| v.as_f64())
}

/// Like [`json_num`] as an integer, 0 when absent (an errno never seen is not listed).
pub fn json_u64(text: &str, key: &str) -> u64 {
    json_field(text, key)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
        .unwrap_or(0)
}

/// True if `key` is `true` ([`json_field`]).
pub fn json_true(text: &str, key: &str) -> bool {
    json_field(text, key) == Some(Value::Bool(true))
}

/// The string at `key` ([`json_field`]).
pub fn json_str(text: &str, key: &str) -> Option<String> {
    json_field(text, key).and_then(|v| v.as_str().map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_by_name_and_path_not_by_substring() {
        let out = "progress 50%\n{\"ok\":true,\"note\":\"\\\"EIO\\\":1\",\"errno\":{\"EIO\":2},\"card\":{\"underruns\":3}}\n";
        assert_eq!(json_u64(out, "EIO"), 2, "not the text inside `note`");
        assert_eq!(json_u64(out, "card.underruns"), 3);
        assert_eq!(json_u64(out, "underruns"), 3);
        assert_eq!(json_u64(out, "EPIPE"), 0);
        assert!(json_true(out, "ok"));
        assert_eq!(json_str(out, "note").as_deref(), Some("\"EIO\":1"));
        assert_eq!(json_field(out, "errno.EIO"), Some(Value::from(2)));
        assert!(json_has(out, "underruns") && !json_has(out, "error"));
    }

    #[test]
    fn the_shallowest_match_is_the_field() {
        let out = "{\"bytes\":1,\"stats\":{\"bytes\":2,\"blocks\":3}}";
        assert_eq!(json_u64(out, "bytes"), 1);
        // A key with dots or brackets (a file name) is one level, not several.
        let files = "{\"/t/a.bin[1]\":{\"bytes\":5},\"x\":{\"y\":{\"bytes\":6}}}";
        assert_eq!(json_u64(files, "bytes"), 5);
        assert_eq!(json_u64(out, "stats.bytes"), 2);
        assert_eq!(json_u64(out, "blocks"), 3);
    }

    #[test]
    #[should_panic(expected = "`bytes` is in 2 places")]
    fn an_ambiguous_key_is_an_error() {
        json_u64("{\"a\":{\"bytes\":1},\"b\":{\"bytes\":2}}", "bytes");
    }

    #[test]
    #[should_panic(expected = "`ok` is in 2 places")]
    fn a_key_in_two_lines_is_an_error() {
        json_true("{\"ok\":true}\n{\"ok\":false}", "ok");
    }
}
