//! Argo CD resource health checks run the way Argo CD runs them: a Lua
//! script that reads the global `obj` (the object as JSON, turned into Lua
//! tables) and returns `{status, message}`. Argo CD embeds gopher-lua, a Lua
//! 5.1; the lab runs Debian's `lua5.1` on the scripts the docs ship
//! (docs/gitops/argocd/), so a script that only works on a newer Lua fails
//! here too.
//!
//! Never: rewrite or patch the script, or skip when the interpreter is
//! missing (it fails naming the package: `make deps` installs it).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The interpreter: Lua 5.1, like Argo CD's gopher-lua.
pub const LUA: &str = "lua5.1";

/// What a health script returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: String,
    pub message: String,
}

/// Run the health `script` on `obj` (a Kubernetes object as read from the
/// API server).
pub fn health(script: &Path, obj: &Value) -> Result<Health, String> {
    let body = std::fs::read_to_string(script).map_err(|e| format!("reading {}: {e}", script.display()))?;
    // Argo CD runs the script as a chunk whose `return` is the result; as
    // the body of a function it does the same here.
    let program = format!(
        "obj = {}\nlocal hs = (function()\n{body}\nend)()\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message or \"\"))\n",
        lua_literal(obj)
    );
    let out = run_lua(&program)?;
    let (status, message) = out.split_once('\n').unwrap_or((out.as_str(), ""));
    Ok(Health { status: status.to_string(), message: message.to_string() })
}

/// `obj` as a Lua table constructor: objects keyed by `["name"]`, arrays as
/// sequences, JSON null as nil (absent, as Argo CD's conversion leaves it).
pub fn lua_literal(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('{');
            for item in items {
                write_value(out, item);
                out.push_str(", ");
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, item) in map.iter().filter(|(_, item)| !item.is_null()) {
                out.push('[');
                write_string(out, k);
                out.push_str("] = ");
                write_value(out, item);
                out.push_str(", ");
            }
            out.push('}');
        }
    }
}

/// A Lua string literal: every byte outside printable ASCII, and the quote
/// and backslash, as a decimal escape (`\ddd`, valid in Lua 5.1).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for b in s.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\{b:03}");
        }
    }
    out.push('"');
}

/// Run `program` on `lua5.1`'s standard input; its standard output.
fn run_lua(program: &str) -> Result<String, String> {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = Command::new(LUA)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{LUA}: {e} (the Debian package lua5.1: `make deps` installs it)"))?;
    child.stdin.take().expect("piped").write_all(program.as_bytes()).map_err(|e| format!("{LUA} stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{LUA}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{LUA} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_become_lua_tables_with_escaped_strings_and_no_nulls() {
        let v = serde_json::json!({"a": [1, "x\"y\\z\n"], "b": null, "c": {"d": true}});
        assert_eq!(lua_literal(&v), r#"{["a"] = {1, "x\034y\092z\010", }, ["c"] = {["d"] = true, }, }"#);
    }
}
