//! Embeds xterm.js (npm `@xterm/xterm` and `@xterm/addon-fit`, installed by `npm ci` in
//! `console/`) into the binary when it is there. Without it the build still succeeds: the
//! console's terminal view then says the assets are missing and how to get them.
//!
//! Writes `$OUT_DIR/xterm_assets.rs`: `XTERM: Option<XtermAssets>`. Nothing of xterm's is
//! kept in the repository.

use std::path::{Path, PathBuf};

/// (the file under `console/node_modules`, the constant that embeds it)
const FILES: [(&str, &str); 3] = [
    ("@xterm/xterm/lib/xterm.js", "xterm_js"),
    ("@xterm/xterm/css/xterm.css", "xterm_css"),
    ("@xterm/addon-fit/lib/addon-fit.js", "fit_js"),
];

fn main() {
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let console = dir.join("console");
    // The whole directory: `npm ci` adding or replacing node_modules reruns this script, and
    // a directory that exists never makes it rerun for nothing (a missing path would).
    println!("cargo:rerun-if-changed={}", console.display());
    let modules = console.join("node_modules");
    let found: Vec<PathBuf> = FILES.iter().map(|(f, _)| modules.join(f)).collect();
    let code = if found.iter().all(|p| p.is_file()) {
        let fields: Vec<String> = FILES
            .iter()
            .zip(&found)
            .map(|((_, name), path)| format!("    {name}: include_bytes!({}),", literal(path)))
            .collect();
        format!(
            "pub const XTERM: Option<XtermAssets> = Some(XtermAssets {{\n{}\n}});\n",
            fields.join("\n")
        )
    } else {
        "pub const XTERM: Option<XtermAssets> = None;\n".to_string()
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(out.join("xterm_assets.rs"), code).expect("writing xterm_assets.rs");
}

/// A Rust string literal of a path (Debug escapes quotes and backslashes).
fn literal(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("the source path is UTF-8"))
}
