//! `sqlx::migrate!` embeds the migrations at compile time: build again when one is added.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
