//! Builds the standard runbooks and the rule engine (`runbooks/`) for wasm32-wasip2 and
//! embeds them, so the `runwarden` binary carries them with it.

#[path = "cargo_guest.rs"]
mod cargo_guest;

fn main() {
    let root = cargo_guest::repo_root();
    let release = cargo_guest::build(&root, "runbooks");
    let members = cargo_guest::component_members(&root, "runbooks");
    let mut code = String::from(
        "/// Every component of `runbooks/`: (crate name, path it was built at, bytes).\npub const COMPONENTS: &[(&str, &str, &[u8])] = &[\n",
    );
    for (name, path) in cargo_guest::components(&release, &members) {
        let p = path.display().to_string();
        code.push_str(&format!("    ({name:?}, {p:?}, include_bytes!({p:?})),\n"));
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, code).unwrap();
}
