//! Embeds the web UI's assets (`assets/`) with content-hashed names: `app.css` is
//! served as `app.<first 8 bytes of its SHA-256, hex>.css`, so a browser may keep it for
//! a year and a new build's pages ask for the new name. Writes `$OUT_DIR/assets.rs`,
//! a table `include!`d by `ui::assets`.

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("assets/ is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for path in names {
        println!("cargo::rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).expect("an asset is readable");
        let hash = hex::encode(&Sha256::digest(&bytes)[..8]);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("asset names are UTF-8");
        let (stem, ext) = name.rsplit_once('.').expect("assets have an extension");
        let content_type = match ext {
            "css" => "text/css; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("assets/{name}: no content type for `.{other}`"),
        };
        writeln!(
            table,
            "    Asset {{ name: {name:?}, hashed: \"{stem}.{hash}.{ext}\", content_type: {content_type:?}, bytes: include_bytes!({:?}) }},",
            path.display().to_string()
        )
        .expect("writing to a string");
    }
    table.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    std::fs::write(out, table).expect("OUT_DIR is writable");
}
