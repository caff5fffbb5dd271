//! Builds the test guests (`tests/guests/`) for wasm32-wasip2 and writes a table of their
//! paths; the standard runbooks come from `runwarden-guests`. (Worktrees sharing one
//! target directory share this script's output: edit it to make it run again, e.g. this line).

#[path = "../../host/guests/cargo_guest.rs"]
mod cargo_guest;

fn main() {
    let root = cargo_guest::repo_root();
    let release = cargo_guest::build(&root, "tests/guests");
    let members = cargo_guest::component_members(&root, "tests/guests");
    let mut code = String::from(
        "/// Every test guest component: (name, path).\npub const COMPONENTS: &[(&str, &str)] = &[\n",
    );
    for (name, path) in cargo_guest::components(&release, &members) {
        code.push_str(&format!(
            "    ({name:?}, {:?}),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("components.rs");
    std::fs::write(out, code).unwrap();
}
